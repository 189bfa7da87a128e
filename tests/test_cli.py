"""python -m gridvlm: readable tables, --json equal to the API, exit 2 and one line on bad input."""

import json
import subprocess
import sys

import pytest
from PIL import Image

import gridvlm
from gridvlm.cli import run


def test_plan_json_equals_the_api(capsys):
    assert run(["plan", "1024x768", "--strategy", "internvl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == gridvlm.plan((1024, 768), "internvl").to_dict()


def test_plan_reads_only_the_image_header(tmp_path, capsys):
    path = tmp_path / "photo.png"
    Image.new("RGB", (1920, 1080), (10, 20, 30)).save(path)
    assert run(["plan", str(path), "--strategy", "qwen2-vl"]) == 0
    out = capsys.readouterr().out
    assert "1920×1080" in out and "visual tokens 2691" in out


def test_plan_params_are_parsed_as_json(capsys):
    assert run(["plan", "1024x768", "--strategy", "internvl", "--param", "max_tiles=6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["max_tiles"] == 6


def test_compare_lists_every_strategy(capsys):
    assert run(["compare", "1024x768"]) == 0
    out = capsys.readouterr().out
    for name in gridvlm.list_strategies():
        assert name in out


def test_compare_json_with_a_budget(capsys):
    assert run(["compare", "1024x768", "--max-tokens", "1000", "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert plans and all(p["token_count"] <= 1000 for p in plans)


def test_pack_groups_images(capsys):
    assert run(["pack", "256x256", "128x128", "512x256", "--max-seq-len", "256", "--patch-size", "32"]) == 0
    assert "1 sequence(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "missing.png"],
        ["plan", "100x100", "--strategy", "nope"],
        ["plan", "100x100", "--strategy", "internvl", "--param", "max_tiles=zero"],
        ["plan", "100x100", "--param", "oops"],
        ["compare", "0x10"],
        ["pack", "64x64", "--max-seq-len", "1"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(argv):
    result = subprocess.run([sys.executable, "-m", "gridvlm", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("gridvlm: ") and result.stderr.count("\n") == 1


def test_not_an_image_is_a_readable_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "gridvlm", "plan", str(path)], capture_output=True, text=True)
    assert result.returncode == 2 and "notes.png" in result.stderr and "Traceback" not in result.stderr


def test_help_names_the_command_gridvlm_and_lists_the_app(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gridvlm ") and "app" in out.split("\n")[0]
