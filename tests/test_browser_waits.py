"""The browser tests wait on conditions with explicit bounds: read from their source, so this runs without chromium.

playwright's `expect(...).to_*()` ignores `page.set_default_timeout` (its own default is 5 s), which made the chat
test fail 4 times in 5 on a busy machine; every assertion and every wait_for_* therefore passes `timeout=`.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "test_app_browser.py"
SOURCES = sorted(SOURCE.parent.glob("test_app_browser*.py"))  # every browser test file (one, today)
WAITS = {"wait_for_function", "wait_for_selector"}


def _calls() -> list[ast.Call]:
    return [n for path in SOURCES for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def test_every_expect_assertion_and_wait_has_an_explicit_timeout():
    checked = [c for c in _calls() if _name(c).startswith(("to_", "not_to_")) or _name(c) in WAITS]
    assert len(checked) >= 5  # the parser found the test's assertions and waits
    missing = [f"line {c.lineno}: {_name(c)}" for c in checked if "timeout" not in {k.arg for k in c.keywords}]
    assert not missing, missing


def test_no_fixed_sleeps_in_the_browser():
    fixed = [f"line {c.lineno}" for c in _calls() if _name(c) == "wait_for_timeout"]
    assert not fixed, fixed


@pytest.mark.slow  # two fresh pytest processes
def test_missing_chromium_skips_with_a_message_outside_ci_and_fails_in_ci():
    def run(ci: bool) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env.update({"CHROMIUM": "/nonexistent/chromium", **({"CI": "true"} if ci else {})})
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SOURCE)],
                              cwd=SOURCE.parents[1], env=env, capture_output=True, text=True, timeout=300)

    local = run(ci=False)
    summary = local.stdout.strip().splitlines()[-1]
    assert local.returncode == 0 and re.fullmatch(r"\d+ skipped in [\d.]+s", summary), local.stdout
    assert "browser tests skipped: chromium is not installed" in local.stdout
    ci = run(ci=True)
    assert ci.returncode != 0 and "CI=true but chromium is not installed" in ci.stdout, ci.stdout
