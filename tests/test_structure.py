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
    text = (PACKAGE / "store" / "db.py").read_text()
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
    assert "imgrank/store/owntimes.py" in table_users()["mtimes"]


def test_each_table_has_one_owner_module():
    shared = {t: sorted(m) for t, m in table_users().items() if len(m) > 1}
    assert not shared, f"tables whose SQL runs in more than one module: {shared}"


# Every table's SQL runs in the store layer (issue 25: "store/: one module per table group, SQL
# only"); the services above call the store's functions.
def test_every_table_is_queried_only_in_the_store():
    users = table_users()
    assert _tables() - {"settings"} <= set(users), sorted(
        _tables() - set(users)
    )  # it sees the SQL (settings: db.py)
    outside = {t: sorted(m for m in users[t] if not m.startswith("imgrank/store/")) for t in users}
    outside = {t: m for t, m in outside.items() if m}
    assert not outside, f"SQL on tables outside imgrank/store/: {outside}"


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


# --- Issue 25: the imports point one way -------------------------------------------------------
# The module import graph, read with `ast`: an edge for every `import imgrank...` or
# `from imgrank... import`, at module level or inside a function (a circle through a
# function-local import is still a circle: it only moves the failure from import time to run time).

# Libraries slow to import, or kept off a light path on purpose: `imgrank status` loads no watchdog
# or torch, `train --data` (a GPU box without the store) no sqlite-utils (it imports pandas where
# that is installed), scoring no scikit-learn, `imgrank --help` no numpy (~0.1 s of its start).
HEAVY = {
    "numpy",
    "torch",
    "sklearn",
    "scipy",
    "starlette",
    "uvicorn",
    "watchdog",
    "sqlite_utils",
    "pyarrow",
    "onnxruntime",
    "uform",
    "safetensors",
    "send2trash",
    "jsonschema",
}
LAZY = re.compile(r"#\s*lazy:\s*\S")
LAZY_LIB = re.compile(r"#\s*lazy:\s*([A-Za-z_]+)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph_modules() -> dict[str, Path]:
    return {module_name(p): p for p in _modules()}


def _function_nodes(tree: ast.AST) -> set[int]:
    inner = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner.update(id(n) for n in ast.walk(fn) if n is not fn)
    return inner


def _targets(node: ast.AST, name: str, path: Path, modules: dict) -> list[str]:
    """The dotted names an import statement may load (a `from x import y` may load x.y)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    # `from package import submodule` loads the submodule (and the package's __init__, which is
    # not counted: a package's __init__ that re-exports is a facade, not a dependency).
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


class Imports:
    """Each module's imports: `edges` (every imgrank module it imports, anywhere), `top` (imgrank
    modules imported at module level), `heavy_top` (heavy libraries imported at module level) and
    `local` (function-local imgrank imports: (module, target, line, source line)). A lazy import
    says why on its line or on the line above: `# lazy: torch`."""

    def __init__(self):
        self.modules = _graph_modules()
        self.edges = {m: set() for m in self.modules}
        self.top = {m: set() for m in self.modules}
        self.heavy_top = {m: set() for m in self.modules}
        self.local = []
        for name, path in self.modules.items():
            text = path.read_text()
            lines = text.splitlines()
            tree = ast.parse(text)
            inner = _function_nodes(tree)
            for node in ast.walk(tree):
                is_local = id(node) in inner
                found = set()
                for target in _targets(node, name, path, self.modules):
                    root = target.split(".")[0]
                    if root in HEAVY and not is_local and not _in_type_checking(tree, node):
                        self.heavy_top[name].add(root)
                    module = self._resolve(target)
                    if module and module != name:
                        found.add(module)
                for module in found:
                    self.edges[name].add(module)
                    if is_local:
                        self.local.append((name, module, node.lineno, lines[node.lineno - 1]))
                    elif not _in_type_checking(tree, node):
                        self.top[name].add(module)

    def line_above(self, module: str, line: int) -> str:
        return self.modules[module].read_text().splitlines()[line - 2] if line > 1 else ""

    def with_packages(self) -> dict[str, set[str]]:
        """The edges, plus the one Python adds: importing a module first runs its package's
        __init__ (a package's own imports of its submodules are not counted back: that is how a
        package loads). A store module inside a package whose __init__ imports the layers above
        would pull them in, and make a circle at run time."""
        edges = {m: set(e) for m, e in self.edges.items()}
        for m in self.modules:
            parent = m.rpartition(".")[0]
            if parent in self.modules and parent != "imgrank":
                edges[m].add(parent)
            edges[m] = {t for t in edges[m] if not t.startswith(m + ".")}
        return edges

    def _resolve(self, target: str) -> str | None:
        while target and target not in self.modules:
            target = target.rpartition(".")[0]
        return target or None

    def heavy(self, module: str) -> set[str]:
        """The heavy libraries importing `module` loads (module-level imports, transitively)."""
        seen, todo, libs = set(), [module], set()
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            libs |= self.heavy_top[m]
            todo.extend(self.top[m])
        return libs


def _in_type_checking(tree: ast.AST, node: ast.AST) -> bool:
    for block in ast.walk(tree):
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING":
            if any(n is node for stmt in block.body for n in ast.walk(stmt)):
                return True
    return False


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_circle_finder_finds_circles():
    # Not vacuous: a made-up graph with one circle of three and a self-standing module.
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = Imports()
    assert "imgrank.store.db" in graph.edges["imgrank.store.vectors"] or any(
        "imgrank.store.db" in graph.edges[m] for m in graph.modules if m.startswith("imgrank.store")
    )
    assert "sqlite_utils" in graph.heavy("imgrank.store.db")


def test_no_module_imports_another_in_a_circle():
    found = circles(Imports().with_packages())
    assert not found, f"import circles (function-local imports included): {found}"


def test_function_local_imports_only_keep_heavy_libraries_off_a_light_path():
    graph, bad = Imports(), []
    for module, target, line, source in graph.local:
        if not LAZY.search(source) and not LAZY.search(graph.line_above(module, line)):
            bad.append(f"{module}:{line} imports {target} inside a function without a '# lazy: why' comment")
        elif not graph.heavy(target) - graph.heavy(module):
            bad.append(f"{module}:{line} imports {target} lazily: it loads no heavy library {module} lacks")
        else:
            reason = LAZY_LIB.search(source) or LAZY_LIB.search(graph.line_above(module, line))
            if reason.group(1) not in graph.heavy(target) - graph.heavy(module):
                bad.append(f"{module}:{line}: {target} does not bring {reason.group(1)}")
    assert not bad, "\n".join(bad)


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in _modules()}
    big = {path: n for path, n in sizes.items() if n > 400}
    assert not big, f"modules over 400 lines: {big}"


# The light paths: what importing these modules must not load (each is a test elsewhere too:
# test_model's `train --data` without the database layer, test_watch's `status` without watchdog or
# torch, scoring and the ranking without torch or scikit-learn).
LIGHT = {
    "imgrank.cli": {
        "numpy",
        "sqlite_utils",
        "torch",
        "sklearn",
        "watchdog",
        "starlette",
        "uvicorn",
        "pyarrow",
    },
    "imgrank.train": {"sqlite_utils", "torch", "sklearn"},
    "imgrank.runs": {"torch", "sklearn", "watchdog", "starlette"},
    "imgrank.ranking": {"torch", "sklearn", "watchdog", "starlette"},
    "imgrank.daemon.heartbeat": {"numpy", "torch", "sklearn", "watchdog", "sqlite_utils"},
}


def test_the_light_paths_stay_light():
    graph = Imports()
    loaded = {m: sorted(graph.heavy(m) & libs) for m, libs in LIGHT.items() if graph.heavy(m) & libs}
    assert not loaded, f"modules that load heavy libraries at import: {loaded}"


def test_imgrank_help_imports_no_numpy():
    # Start-up is what `imgrank --help` and every command pay first: numpy alone is ~0.1 s of it.
    # The commands load what they need when they run (`# lazy: numpy`). Read in a fresh
    # interpreter, which sees what the import graph above may miss (a library's own imports).
    import subprocess
    import sys

    code = (
        "import sys\nfrom imgrank.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "libs = ('numpy', 'sqlite_utils', 'torch', 'sklearn')\n"
        "print('LOADED', sorted(m for m in libs if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout  # it did print the help
    assert done.stdout.splitlines()[-1] == "LOADED []"


# --- the layers (docs/ARCHITECTURE.md) -----------------------------------------------------------
# faces > services > learn > store > base: a module imports only its own layer or those below it.
BASE = {
    "imgrank", "imgrank.config", "imgrank.errors", "imgrank.devices", "imgrank.files", "imgrank.embed",
    "imgrank.embed_torch", "imgrank.encoder_files", "imgrank.private", "imgrank.raw", "imgrank.pairs",
    "imgrank.parentdeath", "imgrank.forkserver_init", "imgrank.words", "imgrank.fstimes",
    "imgrank.head_schema",
}  # fmt: skip
FACES = (
    "imgrank.cli",
    "imgrank.cli_text",
    "imgrank.daemon",
    "imgrank.review",
    "imgrank.report",
    "imgrank.__main__",
)
LAYERS = ("base", "store", "learn", "services", "faces")


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    if module == "imgrank.store" or module.startswith("imgrank.store."):
        return "store"
    if module == "imgrank.learn" or module.startswith("imgrank.learn."):
        return "learn"
    if module == FACES or module.startswith(FACES):
        return "faces"
    return "services"  # everything else: scan, label, train, score, rank, order/restore, export


def test_the_layers_are_known():
    graph = Imports()
    assert all(m in graph.modules for m in BASE), sorted(BASE - set(graph.modules))
    assert {layer(m) for m in graph.modules} == set(LAYERS)


def test_imports_point_down_only():
    graph, up = Imports(), []
    for module, targets in graph.edges.items():
        for target in targets:
            if LAYERS.index(layer(target)) > LAYERS.index(layer(module)):
                up.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert not up, "\n".join(sorted(up))


def test_the_store_imports_only_the_store_and_base():
    graph = Imports()
    bad = [
        f"{m} imports {t}"
        for m, targets in graph.edges.items()
        if layer(m) == "store"
        for t in targets
        if layer(t) not in ("store", "base")
    ]
    assert not bad, bad


def test_learning_imports_no_store_sqlite_or_click():
    graph, bad = Imports(), []
    for module, path in graph.modules.items():
        if layer(module) != "learn":
            continue
        bad += [f"{module} imports {t}" for t in graph.edges[module] if layer(t) == "store"]
        for node in ast.walk(ast.parse(path.read_text())):
            for target in _targets(node, module, path, graph.modules):
                if target.split(".")[0] in ("sqlite3", "sqlite_utils", "click"):
                    bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_every_module_imports_on_its_own():
    # A fresh interpreter per module: an import that only works after some other module was loaded
    # first (a circle at run time, a name moved away) fails here.
    import subprocess
    import sys

    names = sorted(m for m in Imports().modules if m != "imgrank.__main__")
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    failed = []
    for name in names:
        done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=120)
        if done.returncode:
            failed.append(f"{name}: {done.stderr.strip().splitlines()[-1]}")
    assert not failed, "\n".join(failed)
