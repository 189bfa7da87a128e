"""The attention package's import graph: mapping is pure numpy, and nothing loads torch before a capture runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gridvlm" / "attention"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (relative imports resolved inside gridvlm.attention)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "gridvlm.attention" if node.level == 1 else "gridvlm" if node.level == 2 else ""
            names.add(".".join(p for p in (base, node.module or "") if p))
    return names


def test_mapping_imports_numpy_geometry_and_its_errors_only():
    allowed = {"__future__", "collections.abc", "dataclasses", "typing", "numpy", "gridvlm.geometry",
               "gridvlm.attention.errors"}
    assert _imports(PACKAGE / "mapping.py") <= allowed


def test_importing_mapping_or_the_package_loads_no_torch_pil_or_gradio():
    for module in ("gridvlm.attention.mapping", "gridvlm.attention"):
        code = (f"import sys, {module}; heavy = {{'torch', 'PIL', 'gradio', 'transformers'}} & set(sys.modules); "
                "assert not heavy, heavy")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
