"""The structure issue 12 asks for, read from the source: each table's SQL runs in exactly one
module (its owner), the daemon never imports torch at module level, and modules stay small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imgrank"
SQL_VERB = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP)\b")
TABLE_REF = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|EXISTS)\s+([a-z_]+)", re.IGNORECASE)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts)


def _tables() -> set[str]:
    """Every table the migrations create."""
    text = (PACKAGE / "db.py").read_text()
    return set(re.findall(r'db\["([a-z_]+)"\]\.create', text)) | {
        t.lower() for t in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)", text, re.IGNORECASE)
    }


def _sql_strings(path: Path) -> list[str]:
    """String literals (and the literal parts of f-strings) that hold SQL."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if SQL_VERB.search(text):
            out.append(text)
    return out


def table_users() -> dict[str, set[str]]:
    """For each table, the modules whose SQL names it (db.py, which holds the migrations, aside)."""
    tables, users = _tables(), {}
    for path in _modules():
        if path.name == "db.py":
            continue
        for sql in _sql_strings(path):
            for table in TABLE_REF.findall(sql):
                if table.lower() in tables:
                    users.setdefault(table.lower(), set()).add(str(path.relative_to(PACKAGE.parent)))
    return users


def test_the_checker_sees_sql_and_tables():
    # The check below must not pass because it sees nothing.
    assert {"files", "mtimes", "scores", "labels", "vectors", "runs"} <= _tables()
    assert "imgrank/owntimes.py" in table_users()["mtimes"]


def test_each_table_has_one_owner_module():
    shared = {t: sorted(m) for t, m in table_users().items() if len(m) > 1}
    assert not shared, f"tables whose SQL runs in more than one module: {shared}"


def test_modules_stay_small():
    big = {}
    for path in _modules():
        lines = len(path.read_text().splitlines())
        limit = 350 if "daemon" in path.parts else 450
        if path.name != "cli.py" and lines > limit:
            big[str(path.relative_to(PACKAGE.parent))] = lines
    assert not big, f"modules over their size limit: {big}"


def test_the_daemon_imports_no_torch_at_module_level():
    for path in (PACKAGE / "daemon").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "torch" or n.startswith("torch.") for n in names), path
