"""No pixel path holds more than one full-resolution decoded copy of the image (peak RSS, in a fresh process)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh process per case

PHOTO = Path(__file__).resolve().parents[1] / "gridvlm" / "app" / "assets" / "landscape_photo.jpg"  # 4032×3024

SCRIPT = r"""
import json, resource, sys
import gridvlm, torch
from gridvlm.pixels import pixel_values
import io
from PIL import Image
small = io.BytesIO()
Image.new("RGB", (640, 480), (90, 120, 30)).save(small, "JPEG")
warm = gridvlm.plan((640, 480), sys.argv[2])
pixel_values(small.getvalue(), warm, exact=sys.argv[3] == "exact")  # warm-up on a small image: imports, pools
data = open(sys.argv[1], "rb").read()
plan = gridvlm.plan(gridvlm.image_size(data), sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = pixel_values(data, plan, exact=sys.argv[3] == "exact")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tensors = out if isinstance(out, list) else [out]
print(json.dumps({"peak_growth": (after - before) * 1024, "output": sum(t.numel() * 4 for t in tensors)}))
"""


@pytest.mark.parametrize("strategy,mode", [("llava-next", "exact"), ("llava-next", "fast"), ("internvl", "exact")])
def test_peak_memory_stays_below_two_decoded_copies(strategy, mode):
    decoded = 4032 * 3024 * 3
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(PHOTO), strategy, mode], capture_output=True, text=True,
                         check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    # One decoded copy, the outputs and the resized canvases fit; a second full-resolution copy would not.
    assert result["peak_growth"] < 1.5 * decoded + result["output"], result
