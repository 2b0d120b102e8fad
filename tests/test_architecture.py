"""The shape of the library, enforced (docs/ARCHITECTURE.md).

- one-way layers: the import-linter contract in pyproject.toml (a backward import fails);
- mypy is clean on src/;
- no module is shadowed by a function or class of the same dotted name;
- no private name (``_x``) is imported from another module;
- library files hold one idea each: none is over ~450 lines unless listed here with why;
- docstrings cite papers, never the spec files users do not have.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import wideberth

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "wideberth"
MAX_LINES = 450
#: files allowed past MAX_LINES, each with the reason it is still one idea
LONG_FILES: dict[str, str] = {}


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed: run pip install -e '.[dev]'")
    return path


def _library_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_layers_contract_holds() -> None:
    proc = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


def test_mypy_is_clean_on_src() -> None:
    proc = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def _packages() -> list[object]:
    found = [wideberth]
    for info in pkgutil.walk_packages(wideberth.__path__, "wideberth."):
        if info.name.endswith("__main__"):
            continue
        if info.ispkg:
            found.append(importlib.import_module(info.name))
    return found


def test_no_module_is_shadowed_by_a_function() -> None:
    shadowed = []
    for pkg in _packages():
        for info in pkgutil.iter_modules(pkg.__path__):  # type: ignore[attr-defined]
            if info.name == "__main__":
                continue
            importlib.import_module(f"{pkg.__name__}.{info.name}")  # type: ignore[attr-defined]
            attr = getattr(pkg, info.name)
            if not inspect.ismodule(attr):
                shadowed.append(f"{pkg.__name__}.{info.name} is a {type(attr).__name__}")  # type: ignore[attr-defined]
    assert not shadowed, shadowed


def test_renamed_implementation_modules_are_modules() -> None:
    import wideberth.attacks.projected_gradient as m

    assert inspect.ismodule(m)
    assert inspect.isfunction(wideberth.attacks.pgd) and inspect.isfunction(wideberth.evaluate)
    assert inspect.ismodule(importlib.import_module("wideberth.evaluation"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_private_name_is_imported_across_modules() -> None:
    offences = []
    for path in _library_files():
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _resolve(module, path.name == "__init__.py", node)
            if not source.startswith("wideberth"):
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__"):
                    offences.append(f"{module}:{node.lineno} imports {source}.{name}")
    assert not offences, offences


def test_library_files_hold_one_idea() -> None:
    long = {}
    for path in _library_files():
        n = len(path.read_text(encoding="utf-8").splitlines())
        rel = path.relative_to(SRC).as_posix()
        if n > MAX_LINES and rel not in LONG_FILES:
            long[rel] = n
    assert not long, f"split these (or list them in LONG_FILES with the reason): {long}"


def test_docstrings_cite_papers_not_spec_files() -> None:
    cited = [
        f"{p.relative_to(SRC)}:{i}"
        for p in _library_files()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "specs/" in line
    ]
    assert not cited, cited
