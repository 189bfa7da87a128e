"""How gridvlm is installed and deployed: one pin per package, the README's commands, the Space's front matter,
the Docker image's settings and the wheel's contents."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HUB_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}  # the Hub's colorFrom/colorTo


def _pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (comments and -r lines skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pins[name.strip().lower()] = version.strip()
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _front_matter() -> dict:
    yaml = pytest.importorskip("yaml")
    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "a Space README starts with its front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def _code_after(heading: str) -> str:
    """The first line of the first fenced code block after the paragraph starting with `heading`."""
    text = README.read_text(encoding="utf-8")
    block = re.search(re.escape(heading) + r".*?```bash\n(.*?)\n```", text, re.S)
    assert block, f"README: no bash block after {heading!r}"
    return block.group(1).strip()


# ------------------------------------------------------------------------------------------------ pins


def test_requirements_and_the_extras_pin_each_package_once_and_the_same():
    from packaging.requirements import Requirement

    pinned = _pins(ROOT / "requirements.txt")
    extras = [Requirement(r) for deps in _project()["optional-dependencies"].values() for r in deps]
    for req in extras:
        (spec,) = req.specifier
        assert spec.operator == "==", f"pyproject: extra {req} is not an exact pin"
        assert pinned.get(req.name.lower()) == spec.version, f"{req} vs requirements.txt {pinned.get(req.name)}"
    core = [Requirement(r) for r in _project()["dependencies"]]
    for req in core:  # ranges, so the core fits into other projects; the tested pin lies inside
        assert req.specifier.contains(pinned[req.name.lower()]), (req, pinned[req.name.lower()])
    assert set(pinned) == {r.name.lower() for r in extras + core}, "requirements.txt and pyproject list other packages"


def test_dev_requirements_add_only_test_tools():
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in dev
    assert not set(_pins(ROOT / "requirements-dev.txt")) & set(_pins(ROOT / "requirements.txt"))


# ------------------------------------------------------------------------------------------------ README and CI


def test_ci_runs_exactly_the_readmes_test_command():
    command = _code_after("Run the tests")
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in lines, f".ci/run does not run the README's test command {command!r}"
    assert lines[-1] == command, "the README's test command is the last thing .ci/run runs"


def test_readme_commands_need_no_root_and_name_no_machine():
    text = README.read_text(encoding="utf-8")
    for heading in ("Run the app", "Run the tests"):
        command = _code_after(heading)
        assert "apt-get" not in command and "sudo" not in command, command
    assert "python3 -m venv" in text and "download.pytorch.org/whl/cpu" in text
    for path in ("README.md", "Dockerfile", "requirements.txt", "pyproject.toml", ".ci/run"):
        body = (ROOT / path).read_text(encoding="utf-8")
        assert not re.search(r"file://|/opt/|/work/|/root/", body), f"{path} names this machine's paths"


def test_cli_and_app_commands_exist_as_documented():
    project = _project()
    assert project["scripts"]["gridvlm"] == "gridvlm.cli:main"
    assert (ROOT / "gridvlm" / "app" / "__main__.py").exists()


# ------------------------------------------------------------------------------------------------ Spaces


def test_space_front_matter_is_what_the_hub_accepts():
    meta = _front_matter()
    assert meta["sdk"] == "gradio"
    assert str(meta["sdk_version"]) == _pins(ROOT / "requirements.txt")["gradio"]
    assert (ROOT / meta["app_file"]).is_file()
    assert isinstance(meta["short_description"], str) and 0 < len(meta["short_description"]) <= 60, \
        f"the Hub refuses a short_description over 60 characters ({len(meta['short_description'])})"
    assert isinstance(meta["python_version"], str), "quote python_version: YAML reads 3.10 as the number 3.1"
    assert re.fullmatch(r"3\.\d+", meta["python_version"])
    assert f"FROM python:{meta['python_version']}-" in (ROOT / "Dockerfile").read_text(), "Space and Docker differ"
    assert meta["colorFrom"] in HUB_COLOURS and meta["colorTo"] in HUB_COLOURS
    assert meta["license"] == "mit"
    assert isinstance(meta["title"], str) and meta["title"]


def test_space_hardware_is_one_the_hub_names():
    hub = pytest.importorskip("huggingface_hub")
    assert _front_matter()["suggested_hardware"] in {h.value for h in hub.SpaceHardware}


def test_space_lists_the_checkpoints_the_app_offers():
    pytest.importorskip("gradio")
    from gridvlm.app import chat_tab

    models = _front_matter()["models"]
    assert isinstance(models, list) and all(re.fullmatch(r"[\w.-]+/[\w.-]+", m) for m in models), models
    assert sorted(models) == sorted(chat_tab.hub_models())


def test_space_installs_chromium_for_png_export():
    assert "chromium" in (ROOT / "packages.txt").read_text().split()


# ------------------------------------------------------------------------------------------------ Docker


def test_dockerfile_takes_torchs_index_as_a_build_argument_and_runs_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    assert '--index-url "${TORCH_INDEX_URL}"' in text
    assert re.search(r"apt-get install .*\bchromium\b", text)
    assert re.search(r"^USER (?!root|0\b)\S+$", text, re.M)
    assert re.search(r"^HEALTHCHECK ", text, re.M)


# ------------------------------------------------------------------------------------------------ the wheel


@pytest.mark.slow
def test_the_wheel_ships_the_app_and_its_example_images(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "gridvlm", src / "gridvlm", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("gridvlm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    examples = sorted(p.name for p in (ROOT / "gridvlm" / "app" / "assets").iterdir())
    assert {f"gridvlm/app/assets/{name}" for name in examples} <= names  # the images and their README (licences)
    assert {"gridvlm/app/__init__.py", "gridvlm/app/__main__.py", "gridvlm/app/slice_tab.py"} <= names
    assert not any(n.startswith(("tests/", "bench/")) or n == "app.py" for n in names)
