"""Adding a strategy is one new file: every registry-looping test runs on it with no other file edited.

The test copies the `gridvlm` package (the app included) into a temporary folder, writes one throwaway strategy module into its
`strategies/` folder (two halves of the image, 336 px each) and runs the registry-looping tests in a fresh
interpreter that imports the copy, selecting the tests parametrised with the new strategy.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = "two-halves-test"

MODULE = textwrap.dedent('''
    """A throwaway strategy: the image cut into a left and a right half, each squashed to a 336-px square."""

    from ..geometry import Plan, make_tile
    from .reference import CLIP, CLIP_L_336, VICUNA_7B, ReferenceModel
    from .registry import ParamSpec, PixelRecipe, StrategyInfo, register


    def _plan(w, h, p):
        t, g = p["tile_size"], p["tile_size"] // 14
        halves = ((0.0, 0.0, w / 2, float(h)), (w / 2, 0.0, float(w), float(h)))
        tiles = tuple(make_tile(i, 0, i, box, (t, t), g * g, (g, g)) for i, box in enumerate(halves))
        return Plan("{name}", p, (w, h), (1, 2), None, tiles, None, None, 2 * g * g, {{"tiles": 2 * g * g}})


    register(StrategyInfo(
        name="{name}",
        family="fixed grid",
        summary="two halves of the image, 336 px each (a test strategy)",
        reference="none: a test of the registry seam",
        params={{"tile_size": ParamSpec("int", 336, "view side", min=14, max=1008)}},
        budget="none: always two views",
        planner=_plan,
        pixels=PixelRecipe(CLIP),
        reference_model=ReferenceModel(CLIP_L_336, VICUNA_7B),
        order=5,
    ))
''').format(name=NAME)

# Test files whose tests loop over list_strategies() (parametrised by strategy name).
REGISTRY_TESTS = [
    "test_plan_invariants.py", "test_errors.py", "test_fit_budget.py", "test_pixels.py", "test_metrics.py",
    "test_viz.py", "test_cli.py", "test_vectors.py", "test_app_handlers.py",
]


@pytest.mark.slow
def test_a_new_strategy_module_is_planned_tested_and_shown(tmp_path):
    shutil.copytree(ROOT / "gridvlm", tmp_path / "gridvlm", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "gridvlm" / "strategies" / "two_halves_test.py").write_text(MODULE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "")}
    files = [str(ROOT / "tests" / f) for f in REGISTRY_TESTS if (ROOT / "tests" / f).exists()]
    report = tmp_path / "report.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
         "-k", f"{NAME} or every_strategy", *files],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    cases = ElementTree.parse(report).getroot().iter("testcase")
    ran_on_it = {c.get("classname").rsplit(".", 1)[-1] for c in cases
                 if NAME in c.get("name") or "every_strategy" in c.get("name")}
    # every file that loops over the registry really ran tests on the new strategy
    assert ran_on_it == {f.removesuffix(".py") for f in REGISTRY_TESTS}, ran_on_it

    check = subprocess.run(
        [sys.executable, "-c", f"import gridvlm; assert gridvlm.list_strategies()[0] == {NAME!r}; "
                               "print(gridvlm.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert check.returncode == 0 and str(tmp_path) in check.stdout, check.stdout + check.stderr
