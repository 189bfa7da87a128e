"""Idefics3 and SmolVLM through gridvlm.models, against transformers' own processors, models and eager attention.

Tiny checkpoints with the real geometry and random weights: idefics3 = Idefics3-8B-Llama3's (364-px tiles,
patch 14, shuffle 2 → 169, longest edge 1456), smolvlm = SmolVLM2-2.2B's (384-px tiles, patch 14 — 27 patches
cover pixels 0–378 —, shuffle 3 → 81, longest edge 1536). SmolVLM-256M-Instruct's real config (an Idefics3
checkpoint: 512 px, patch 16, shuffle 4 → 64, longest edge 2048) is read without weights.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from hypothesis import given, settings, strategies as st  # noqa: E402

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

from gridvlm import attention as A  # noqa: E402
from gridvlm.models import load_vlm, make_tiny_vlm, prepare_inputs, view_pixels  # noqa: E402
from gridvlm.models.adapter import get_adapter  # noqa: E402

from fast_processors import blank, without_pixel_work  # noqa: E402

FAMILIES = ["idefics3", "smolvlm"]
GEOMETRY = {"idefics3": (364, 14, 2, 1456), "smolvlm": (384, 14, 3, 1536)}  # tile, patch, shuffle, longest edge


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("idefics")
    dirs = {f: make_tiny_vlm(root / f, f, seed=3) for f in FAMILIES}
    return dirs, {f: load_vlm(d, device="cpu") for f, d in dirs.items()}


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h))


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_is_marked_and_has_the_real_geometry(tiny, family):
    import transformers

    dirs, vlms = tiny
    vlm = vlms[family]
    assert vlm.random_weights and "random weights" in vlm.label
    config = transformers.AutoConfig.from_pretrained(dirs[family])
    assert config.model_type == family
    g = vlm.geometry
    assert (g.tile_size, g.patch_size, g.scale_factor, g.longest_edge) == GEOMETRY[family]
    assert g.features_side ** 2 == vlm.processor.image_seq_len


def test_idefics3_tiny_loads_with_transformers_own_processor(tiny):
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(tiny[0]["idefics3"], backend="pil")
    assert type(processor).__name__ == "Idefics3Processor"
    assert type(processor.image_processor).__name__ == "Idefics3ImageProcessorPil"


def smolvlm_256m_config():
    """HuggingFaceTB/SmolVLM-256M-Instruct's config and preprocessor config, written from memory of its hub files
    (model card: 64 tokens per 512×512 patch, 93M SigLIP base patch-16/512, SmolLM2-135M): model_type idefics3,
    vision 768 wide × 12 layers at 512/16, scale_factor 4, text SmolLM2 576 × 30 layers (9 heads, 3 KV),
    longest_edge 2048, max_image_size 512, image_seq_len 64."""
    from transformers import Idefics3Config, LlamaConfig
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                           num_attention_heads=12, image_size=512, patch_size=16),
        text_config=LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, vocab_size=49280,
                                max_position_embeddings=8192, rope_theta=100000.0),
        scale_factor=4, image_token_id=49190)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
                                                resample=1, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return config, image_processor


def test_smolvlm_256m_real_config_reads_through_the_idefics3_adapter():
    import transformers

    config, image_processor = smolvlm_256m_config()
    config = transformers.AutoConfig.for_model(**config.to_dict())  # as from_pretrained reads config.json
    adapter = get_adapter("idefics3")
    assert config.model_type in adapter.model_types
    geo = adapter.read_geometry(config, image_processor)
    assert (geo.tile_size, geo.patch_size, geo.scale_factor, geo.longest_edge) == (512, 16, 4, 2048)
    assert geo.features_side ** 2 == 64
    plan = adapter.native_plan(geo, (1024, 768))
    rows, cols = plan.grid
    assert plan.token_count == 64 * (rows * cols + 1) and plan.views[-1].is_thumbnail
    counting = without_pixel_work(type(image_processor))(**image_processor.to_dict())
    out = counting(blank(1024, 768), return_row_col_info=True, do_rescale=False, do_normalize=False, do_pad=False)
    assert (out["rows"][0][0], out["cols"][0][0]) == (rows, cols)
    assert adapter.patch_pixels(geo, plan)[0] == (16.0, 16.0)
    assert adapter.layout(geo, plan).cell_px[0] == (64.0, 64.0)


sizes = st.one_of(
    st.tuples(st.integers(1, 3000), st.integers(1, 3000)),
    st.integers(1, 60).flatmap(lambda s: st.sampled_from([(s, 50 * s), (50 * s, s)])),  # 1:50 panoramas
)


@pytest.fixture(scope="module")
def counting_processors(tiny):
    """Each checkpoint's processor with transformers' Idefics3 image processor minus the resampling."""
    import copy

    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    dirs, vlms = tiny
    out = {}
    for family, vlm in vlms.items():
        processor = copy.copy(vlm.processor)
        processor.image_processor = without_pixel_work(Idefics3ImageProcessorPil).from_pretrained(dirs[family])
        out[family] = processor
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_native_plan_and_span_are_what_the_processor_writes(tiny, counting_processors, family):
    """Image tokens, grid and the whole expansion's length (markers and newlines included), on 150 sizes per
    family, through transformers' own size logic (`get_number_of_image_patches` is not it)."""
    vlm = tiny[1][family]
    processor = counting_processors[family]
    template = len(vlm.tokenizer("<image>", add_special_tokens=False)["input_ids"])

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(size=sizes)
    def check(size):
        plan = vlm.native_plan(size)
        out = processor(images=blank(*size), text="<image>", images_kwargs={"do_rescale": False,
                                                                           "do_normalize": False, "do_pad": False})
        ids = np.asarray(out["input_ids"][0])
        assert int((ids == vlm.image_token_id).sum()) == plan.token_count
        assert len(out["pixel_values"][0]) == plan.num_views
        assert len(ids) - template + 1 == len(vlm.family.layout(vlm.geometry, plan))

    check()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [(640, 480), (1000, 300), (300, 900), (364, 364), (200, 150), (2000, 40), (1, 1),
                                  (1920, 1080), (1457, 700)])
def test_real_pixels_give_the_layouts_span(tiny, family, size):
    """The unchanged processor on real pixels: every position of its expansion is what `layout` says (image
    tokens as features, markers as separators, the "\\n" after each tile row as newlines)."""
    vlm = tiny[1][family]
    image = noise_image(*size, seed=sum(size))
    prepared = prepare_inputs(vlm, image, "native", [], "Describe it.")
    plan = vlm.native_plan(image)
    layout = vlm.family.layout(vlm.geometry, plan)
    ids = prepared.input_ids[0].numpy()[list(prepared.visual_positions)]
    assert np.array_equal(ids == vlm.image_token_id, layout.feature)
    breaks = np.isin(ids, [t for text in ("\n", "\n\n") for t in vlm.tokenizer(text, add_special_tokens=False)
                           ["input_ids"]])  # the tiny tokenizer writes "\n\n" as two "\n"; real ones as one token
    assert breaks[layout.newline].all() and (layout.kind[breaks & ~layout.newline] == A.SEPARATOR).all()
    rows = plan.grid[0] if plan.thumbnail else 0
    assert layout.newline.sum() == rows
    assert breaks.sum() == rows + (vlm.geometry.global_break_tokens - 1) * (rows > 0)
    t = GEOMETRY[family][0]
    assert prepared.kwargs["pixel_values"].shape == (1, plan.num_views, 3, t, t)
    assert bool(prepared.kwargs["pixel_attention_mask"].all())  # whole tiles: nothing padded


@pytest.mark.parametrize("family", FAMILIES)
def test_position_boxes_are_cells_of_the_rounded_canvas(tiny, family):
    """Tile (r, c) shows pixels c·t…(c+1)·t of the image resized to the tile-rounded canvas (W2 × H2); feature
    (i, j) shows scale·patch px of it; the global view is the canvas squashed to t × t."""
    vlm = tiny[1][family]
    t, p, s, _ = GEOMETRY[family]
    w, h = 1000, 300
    plan = vlm.native_plan((w, h))
    rows, cols = plan.grid
    w2, h2 = cols * t, rows * t
    layout = vlm.family.layout(vlm.geometry, plan)
    boxes = A.position_boxes(layout, plan)
    cell = p * s
    for k in np.nonzero(layout.feature)[0][::11]:
        v = plan.views[layout.view[k]]
        i, j = layout.feat_row[k], layout.feat_col[k]
        if v.is_thumbnail:
            expect = (j * cell * w / t, i * cell * h / t, (j + 1) * cell * w / t, (i + 1) * cell * h / t)
        else:
            x0, y0 = v.col * t + j * cell, v.row * t + i * cell
            expect = (x0 * w / w2, y0 * h / h2, (x0 + cell) * w / w2, (y0 + cell) * h / h2)
        assert boxes[k] == pytest.approx(expect)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("heads", ["mean", 0])
def test_vision_attention_equals_eager_tower(tiny, family, heads):
    vlm = tiny[1][family]
    image = noise_image(700, 500, seed=5)
    plan = vlm.native_plan(image)
    n = GEOMETRY[family][0] // GEOMETRY[family][1]
    maps = A.vision_attention(vlm, image, "native", heads=heads)
    assert maps.shape == (plan.num_views, n, n)
    tower = vlm.family.vision_tower(vlm.model)
    before = tower.config._attn_implementation
    tower.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = tower(view_pixels(vlm, image, plan), output_attentions=True)
    finally:
        tower.set_attn_implementation(before)
    w = out.attentions[-1].numpy().mean(axis=2)  # (views, heads, patches): mean attention received, last layer
    ref = w.mean(axis=1) if heads == "mean" else w[:, heads]
    assert np.abs(maps.reshape(len(maps), -1) - ref).max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_heatmaps_of_a_reply_keep_tiles_global_view_and_markers_apart(tiny, family):
    vlm = tiny[1][family]
    image = noise_image(900, 500, seed=7)
    prepared = prepare_inputs(vlm, image, "native", [], "What is it?")
    sequence = prepared.input_ids[0].tolist() + [300, 301, 302]  # plain text tokens
    record = A.reply_record(vlm, image, "native", sequence, prepared.prompt_tokens,
                            visual_positions=prepared.visual_positions)
    llm = A.attention_maps(record, rows=A.WHOLE_ANSWER)
    shares = llm.shares
    assert shares["tiles"] > 0 and shares["global view"] > 0 and shares["newlines"] > 0
    assert llm.view_maps.labels[-1] == "global view" and record.plan.views[-1].is_thumbnail
    vision = A.attention_maps(record, source=A.VISION)
    np.testing.assert_allclose(vision.view_maps.view_mass, 1.0, atol=1e-5)  # mean received sums to 1 per view
