"""A missing optional dependency is named together with the extra that installs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Makes the named top-level packages look uninstalled to this process, as in a venv without the extra.
BLOCK = """
import sys
BLOCKED = {blocked!r}
class _Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Uninstalled())
"""


def _run(blocked: tuple[str, ...], code: str) -> str:
    out = subprocess.run([sys.executable, "-c", BLOCK.format(blocked=set(blocked)) + code], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pixel_values_without_torch_names_the_models_extra():
    out = _run(("torch",), """
import gridvlm
from gridvlm.extras import MissingExtra
try:
    from PIL import Image
    gridvlm.pixel_values(Image.new('RGB', (640, 480)), gridvlm.plan((640, 480), 'llava-next'))
except MissingExtra as exc:
    assert isinstance(exc, ModuleNotFoundError) and exc.name == 'torch'
    print(exc)
""")
    assert out == "gridvlm.pixel_values needs torch, which is not installed: pip install 'gridvlm[models]'"


def test_models_without_transformers_names_the_models_extra():
    out = _run(("transformers",), """
from gridvlm.extras import MissingExtra
import gridvlm.models  # cheap: ModelError only
try:
    gridvlm.models.load_vlm
except MissingExtra as exc:
    print(exc)
""")
    assert out == "gridvlm.models.load_vlm needs transformers, which is not installed: pip install 'gridvlm[models]'"


def test_viz_and_the_app_without_their_packages_name_the_app_extra():
    out = _run(("plotly", "gradio"), """
from gridvlm.extras import MissingExtra
for attempt in ("import gridvlm.viz", "from gridvlm.app import build_demo"):
    try:
        exec(attempt)
    except MissingExtra as exc:
        print(exc)
""")
    assert out.splitlines() == [
        "gridvlm.viz needs plotly, which is not installed: pip install 'gridvlm[app]'",
        "gridvlm's app needs gradio, which is not installed: pip install 'gridvlm[app]'",
    ]


def test_a_missing_import_inside_an_installed_package_is_not_blamed_on_the_extra(tmp_path, monkeypatch):
    from gridvlm.extras import MissingExtra, require

    (tmp_path / "halfbroken").mkdir()
    (tmp_path / "halfbroken" / "__init__.py").write_text("import no_such_dependency_of_halfbroken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        require("halfbroken", "app")
    except ModuleNotFoundError as exc:
        assert not isinstance(exc, MissingExtra) and exc.name == "no_such_dependency_of_halfbroken"
    else:  # pragma: no cover
        raise AssertionError("expected ModuleNotFoundError")
