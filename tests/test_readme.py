"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in readme.splitlines() if line.rstrip().endswith("&& pytest"))
    assert test_command.strip() in ci
    assert ci.index("torch==2.13.0") < ci.index("-e '.[dev")
