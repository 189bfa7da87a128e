"""UReader/DocOwl score anchors with int64 boxes turned float32 by torch; gridvlm emulates that in pure Python.

This test recomputes the score with real torch tensors (int64 boxes, float32 arithmetic, argmax first
maximum), following the reference code, and compares the chosen anchor on random sizes.
"""

import random

import pytest

torch = pytest.importorskip("torch")

import gridvlm  # noqa: E402
from gridvlm.strategies.grids import DOCOWL_GRID_9, UREADER_ANCHORS, anchor_rank  # noqa: E402


def torch_anchor(w, h, anchors, tile):
    boxes = torch.tensor([[0, 0, c * tile, r * tile] for r, c in anchors])  # int64, xyxy
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def iou(other):  # other: (N, 4) boxes matched one-to-one with `boxes`
        lt = torch.max(boxes[:, :2], other[:, :2])
        rb = torch.min(boxes[:, 2:], other[:, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        union = areas + (other[:, 2] - other[:, 0]) * (other[:, 3] - other[:, 1]) - inter
        return inter / (union + 1e-5)

    image = torch.tensor([[0, 0, w, h]]).expand(len(anchors), 4)
    shape = boxes.clone()
    shape[:, 3] = h / w * boxes[:, 2]  # float32 product written into int64: truncation
    return int(torch.argmax(iou(shape) * 100 + iou(image)))


@pytest.mark.parametrize("anchors,tile", [(UREADER_ANCHORS, 224), (DOCOWL_GRID_9, 448)])
def test_pure_python_float32_scoring_matches_torch(anchors, tile):
    rng = random.Random(0)
    sizes = [(rng.randint(1, 10_000), rng.randint(1, 10_000)) for _ in range(400)]
    sizes += [(224 * c, 224 * r) for r, c in anchors] + [(1, 1), (10_000, 50), (50, 10_000)]
    for w, h in sizes:
        assert anchor_rank(w, h, anchors, tile) == torch_anchor(w, h, anchors, tile), (w, h)


def test_plan_uses_the_ranked_anchor():
    plan = gridvlm.plan((1024, 768), "ureader")
    assert plan.grid == tuple(UREADER_ANCHORS[torch_anchor(1024, 768, UREADER_ANCHORS, 224)])
