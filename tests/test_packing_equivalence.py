"""A packed sequence gives every image the same outputs as running it alone — the point of NaViT's masks.

A tiny random ViT (patch embedding, factorised row + column position embedding, pre-norm blocks with
multi-head self-attention taking a boolean mask) is fed once with the packed batch built from
``Packing.image_ids`` / ``position_ids`` / ``attention_mask``, and once per image on its own. Attention runs
either through ``scaled_dot_product_attention`` or as a written-out softmax, because they treat a fully masked
row differently (see ``packed_inputs``).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gridvlm.packing import pack

P = 4  # patch side in pixels: small, so the test runs in milliseconds
DIM, HEADS, DEPTH = 32, 4, 2
MAX_GRID = 16  # rows/cols the position tables cover


def attend(q, k, v, mask, explicit):  # (b, h, n, dh) ×3, (b, 1, n, n) bool or None → (b, h, n, dh)
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (b, h, n, n)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.explicit = False  # True: written-out softmax instead of SDPA
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.out = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x, mask=None):  # x: (b, n, d); mask: (b, 1, n, n) bool, True = may attend
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)  # (b, h, n, dh)
        attended = attend(q, k, v, mask, self.explicit)  # (b, h, n, dh)
        x = x + self.out(attended.transpose(1, 2).reshape(b, n, DIM))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3 * P * P, DIM)
        self.pos_h = nn.Parameter(torch.randn(MAX_GRID, DIM))
        self.pos_w = nn.Parameter(torch.randn(MAX_GRID, DIM))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)

    def forward(self, patches, positions, mask=None):  # (b, n, c·p·p), (b, n, 2) long, (b, 1, n, n) bool
        rows, cols = positions.clamp(min=0).unbind(-1)  # padding (-1) reads row 0; its output is never used
        x = self.embed(patches) + self.pos_h[rows] + self.pos_w[cols]  # (b, n, d)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def patchify(image):
    """(3, H, W) → (rows·cols, 3·P·P), row-major; the remainder beyond whole patches is cropped, as in gridvlm."""
    _, h, w = image.shape
    rows, cols = h // P, w // P
    grid = image[:, : rows * P, : cols * P].reshape(3, rows, P, cols, P)
    return grid.permute(1, 3, 0, 2, 4).reshape(rows * cols, 3 * P * P)


def packed_inputs(packing, images):
    """The batch a packed forward sees: one row per sequence, length ``padded_len``."""
    length = packing.padded_len
    patches = torch.zeros(len(packing.sequences), length, 3 * P * P)  # (b, L, c·p·p)
    positions, masks = [], []
    for s in range(len(packing.sequences)):
        pos = torch.from_numpy(packing.position_ids(s))  # (L, 2)
        for i, start, stop in packing.spans(s):
            rows, cols = pos[start:stop].unbind(-1)
            patches[s, start:stop] = patchify(images[i])[rows * packing.items[i].grid[1] + cols]
        mask = torch.from_numpy(packing.attention_mask(s))  # (L, L)
        # Padding rows are all False. A softmax over nothing is NaN (torch 2.13's CPU SDPA returns 0 there, other
        # kernels and written-out attention do not), and that NaN reaches real tokens in the next layer
        # (0 weight × NaN value = NaN). Letting each padding token attend to itself keeps every row finite
        # without touching a real token's attention: real queries still never see padding keys.
        is_pad = torch.from_numpy(packing.image_ids(s) < 0)
        masks.append(mask | torch.diag(is_pad))
        positions.append(pos)
    return patches, torch.stack(positions), torch.stack(masks)[:, None]  # (b, L, ·), (b, L, 2), (b, 1, L, L)


def make_model(explicit):
    torch.manual_seed(0)
    vit = TinyViT().eval()
    for block in vit.blocks:
        block.explicit = explicit
    return vit


@pytest.fixture(scope="module", params=["sdpa", "explicit"])
def model(request):
    return make_model(explicit=request.param == "explicit")


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    # (h, w): 4×5, 3×3, 2×6 and 5×2 patches; two sides are not multiples of P and get cropped
    return [torch.randn(3, h, w) for h, w in [(16, 20), (12, 14), (8, 24), (21, 8)]]


@pytest.mark.parametrize("order", ["given", "first-fit-decreasing"])
@pytest.mark.parametrize("drop_rate", [0.0, 0.5])
@torch.no_grad()
def test_packed_tokens_equal_each_image_alone(model, images, order, drop_rate):
    sizes = [(img.shape[2], img.shape[1]) for img in images]
    packing = pack(sizes, max_seq_len=32, patch_size=P, order=order, drop_rate=drop_rate, seed=3)
    assert any(len(seq) >= 2 for seq in packing.sequences)  # really packed, not one image per sequence

    packed = model(*packed_inputs(packing, images))  # (b, L, d)
    assert torch.isfinite(packed).all()
    for s in range(len(packing.sequences)):
        for i, start, stop in packing.spans(s):
            kept = torch.tensor(packing.kept_positions(i), dtype=torch.long).reshape(-1, 2)  # (n, 2)
            flat = kept[:, 0] * packing.items[i].grid[1] + kept[:, 1]
            alone = model(patchify(images[i])[flat][None], kept[None])  # (1, n, d), no mask at all
            torch.testing.assert_close(packed[s, start:stop], alone[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_without_the_block_mask_images_leak_into_each_other(model, images):
    # The check above can fail: attending across images changes the outputs.
    sizes = [(img.shape[2], img.shape[1]) for img in images]
    packing = pack(sizes, max_seq_len=64, patch_size=P)
    patches, positions, _ = packed_inputs(packing, images)
    real = torch.from_numpy(packing.image_ids(0) >= 0)
    everything = (real[:, None] & real[None, :]) | torch.diag(~real)  # real tokens see every real token
    leaked = model(patches, positions, everything[None, None])
    blocked = model(patches, positions, packed_inputs(packing, images)[2])
    _, start, stop = packing.spans(0)[0]
    assert not torch.allclose(leaked[0, start:stop], blocked[0, start:stop], atol=1e-3)


@torch.no_grad()
def test_fully_masked_padding_rows_poison_real_tokens(images):
    # Why packed_inputs unmasks each padding token's diagonal: with a written-out softmax the raw mask turns
    # padding rows into NaN in layer 1, and every real token into NaN in layer 2.
    model = make_model(explicit=True)
    packing = pack([(img.shape[2], img.shape[1]) for img in images[:2]], max_seq_len=64, patch_size=P)
    patches, positions, _ = packed_inputs(packing, images)
    raw = torch.from_numpy(packing.attention_mask(0))[None, None]  # (1, 1, L, L)
    assert torch.isnan(model(patches, positions, raw)[0, 0]).all()
