"""The package layers point one way (docs/architecture.md), and nothing installs a generic name.

Imports are read from the source (``ast``), so the check sees function-level imports too: a
lazy import of a higher layer is still a dependency on it. Only ``if TYPE_CHECKING:`` blocks
are left out, because they never run.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Import name -> repository folder (setup.py installs them so).
FOLDERS = {
    "gatewayd": ROOT / "gatewayd",
    "gatewayd.drivers": ROOT / "drivers",
    "gatewayd.rules": ROOT / "rules",
    "gatewayd.simulators": ROOT / "simulators",
}
#: Bottom to top. A layer may import the layers below it, never one above; the layers on one
#: line are independent of each other.
LAYERS: list[tuple[str, ...]] = [
    ("gatewayd.kernel",),
    ("gatewayd.drivers", "gatewayd.rules"),
    ("gatewayd.simulators", "gatewayd.security"),
    ("gatewayd.console", "gatewayd.uplink"),
    ("gatewayd.service",),
    ("gatewayd.app",),
]


@dataclass(frozen=True, slots=True)
class Import:
    source: str
    target: str
    line: int
    #: At module level (runs on import), not inside a function.
    eager: bool


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            # A folder mapped elsewhere (gatewayd.drivers) is not also under gatewayd/.
            found.setdefault(name, path)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, eager: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (i for orelse in child.orelse for i in visit(orelse, eager))
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, child.lineno, eager)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    # ``from package import module`` depends on the module itself.
                    yield Import(name, full if full in known else base, child.lineno, eager)
            inner = eager and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            yield from visit(child, inner)

    yield from visit(tree, True)


def graph() -> list[Import]:
    found = modules()
    known = set(found)
    edges = []
    for name, path in found.items():
        for imp in imports_of(name, path, known):
            target = imp.target
            # Importing a.b.c runs a.b.c; attribute imports resolve to their module.
            while target and target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                edges.append(Import(imp.source, target, imp.line, imp.eager))
    return edges


def layer_of(module: str) -> tuple[int, str] | None:
    for level, names in enumerate(LAYERS):
        for layer in names:
            if module == layer or module.startswith(layer + "."):
                return level, layer
    return None


def test_every_module_belongs_to_a_layer() -> None:
    top = {"gatewayd", "gatewayd.__main__"}
    loose = [m for m in modules() if m not in top and layer_of(m) is None]
    assert not loose, f"modules outside every layer of LAYERS: {loose}"


def test_no_layer_imports_a_layer_above_or_beside_it() -> None:
    wrong = []
    for imp in graph():
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source is None or target is None or source[1] == target[1]:
            continue
        if target[0] >= source[0]:
            where = "above" if target[0] > source[0] else "beside"
            wrong.append(f"{imp.source}:{imp.line} imports {imp.target} ({where} it)")
    assert not wrong, "\n".join(wrong)


def test_drivers_never_import_each_other() -> None:
    def driver(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if module.startswith("gatewayd.drivers.") and len(parts) > 2 else None

    wrong = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in graph()
        if driver(i.source) and driver(i.target) and driver(i.source) != driver(i.target)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_level_import_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for imp in graph():
        if imp.eager:
            edges.setdefault(imp.source, set()).add(imp.target)
    cycle = _find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_importing_the_rules_engine_loads_no_security_console_tls_or_uplink() -> None:
    code = (
        "import sys, gatewayd.rules.engine, gatewayd.rules.rulefile\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('gatewayd.security',"
        " 'gatewayd.console', 'gatewayd.uplink', 'gatewayd.service', 'gatewayd.app')))\n"
        "print(' '.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path_factory.mktemp("source") / "gatewayd"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "artifacts", "var"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("gatewayd-*.whl"))


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        files = set(archive.namelist())
    assert {t for t in tops if not t.endswith(".dist-info")} == {"gatewayd"}
    # Every module of the mapped folders is inside it.
    for module in modules():
        path = module.replace(".", "/")
        assert f"{path}.py" in files or f"{path}/__init__.py" in files, module
