"""Imports flow one way: strategies know only geometry and errors; the core knows nothing of the app, the CLI or
the model adapters; only the app imports gradio. Read from the source (every import, including late ones)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gridvlm"
# The core: planning, packing, pixels, metrics and figures. Everything else builds on it.
CORE = ("geometry", "errors", "strategies", "packing", "imaging", "pixels", "metrics", "viz")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from . import x` may name a module
    return found


def sources(*subpackages: str) -> list[Path]:
    paths = []
    for sub in subpackages:
        target = PACKAGE / sub
        paths += sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]
    return [p for p in paths if p.exists()]


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n == "gridvlm" or n.startswith("gridvlm.")}


@pytest.mark.parametrize("path", sources("strategies"), ids=lambda p: p.name)
def test_strategies_import_only_geometry_errors_and_each_other(path):
    allowed = ("gridvlm.geometry", "gridvlm.errors", "gridvlm.strategies")
    names = imports_of(path)
    assert ours(names) - {n for n in ours(names) if n.startswith(allowed)} == set()
    third_party = {n.split(".")[0] for n in names} - {"gridvlm", "__future__", "math", "struct", "dataclasses",
                                                       "typing", "importlib", "pkgutil", "functools", "itertools"}
    assert third_party == set(), f"{path.name} imports {third_party}: strategies are pure arithmetic"


@pytest.mark.parametrize("path", sources(*CORE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_imports_no_app_cli_or_models(path):
    banned = ("gridvlm.app", "gridvlm.cli", "gridvlm.models", "gridvlm.attention")
    assert {n for n in ours(imports_of(path)) if n.startswith(banned)} == set()


def test_only_the_app_imports_gradio():
    importers = {module_name(p) for p in PACKAGE.rglob("*.py") if "gradio" in {n.split(".")[0] for n in imports_of(p)}}
    assert {m for m in importers if not m.startswith("gridvlm.app")} == set()
