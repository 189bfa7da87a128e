"""gridvlm.models on tiny random-weight checkpoints with the real geometry, compared with transformers' own path.

Everything runs offline on CPU: the checkpoints are built by make_tiny_vlm in a temporary directory.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a guard: nothing here may touch the network

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # builds and runs tiny random-weight models

import gridvlm  # noqa: E402
from gridvlm import Plan  # noqa: E402
from gridvlm.models import ModelError, list_adapters, load_vlm, make_tiny_vlm, prepare_inputs  # noqa: E402
from gridvlm.models.adapter import get_adapter  # noqa: E402
from gridvlm.models.families._llava import LlavaAdapter  # noqa: E402
from gridvlm.models.visual import encode  # noqa: E402

FAMILIES = list_adapters()  # every registered family is tested the moment its module exists
# the LLaVA-style families (gridvlm.models.families._llava): AnyRes packing, image_newline, plan mode
LLAVA = [f for f in FAMILIES if isinstance(get_adapter(f), LlavaAdapter)]
# of those, the AnyRes ones (grid pinpoints, a global view first, image_newline); LLaVA-1.5 has none of these
ANYRES = [f for f in LLAVA if get_adapter(f).anyres_strategies]
TILE_SIDE = {"llava-next": 336, "llava-onevision": 384, "llava-1.5": 336}  # the real checkpoints' encoder input, where known
SIZES = [(500, 400), (1024, 768), (300, 900)]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {fam: make_tiny_vlm(root / fam, fam, seed=0) for fam in FAMILIES}


@pytest.fixture(scope="session")
def vlms(tiny_dirs):
    from gridvlm import limits

    before = limits.active()
    limits.configure(max_models=max(before.max_models, len(FAMILIES)))  # every family stays cached (identity checks)
    yield {fam: load_vlm(tiny_dirs[fam], device="cpu") for fam in FAMILIES}
    limits.configure(before)


def noise_image(w: int, h: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)  # blocky: resampling matters
    return Image.fromarray(base).resize((w, h), Image.NEAREST)


def reference_embeds_and_logits(vlm, inputs):
    """transformers' own merged inputs_embeds (captured at the language model) and last-position logits."""
    captured = {}
    hook = vlm.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.__setitem__("embeds", kwargs["inputs_embeds"].clone()),
        with_kwargs=True)
    try:
        with torch.inference_mode():
            logits = vlm.model(**inputs).logits[0, -1]
    finally:
        hook.remove()
    return captured["embeds"], logits


# ------------------------------------------------------------------------------------------------ checkpoints


def test_importing_models_loads_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = ("import sys, gridvlm.models; from gridvlm.models import ModelError; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert issubclass(ModelError, gridvlm.GridVLMError)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoint_is_marked_and_loads_with_transformers(tiny_dirs, family):
    import transformers

    directory = tiny_dirs[family]
    assert json.loads((directory / "config.json").read_text())["gridvlm_random_weights"] is True
    assert "random weights" in (directory / "README.md").read_text()
    config = transformers.AutoConfig.from_pretrained(directory)
    if family in TILE_SIDE:
        assert config.vision_config.image_size == TILE_SIDE[family]
        assert config.vision_config.patch_size == 14
    assert config.image_token_id < config.text_config.vocab_size


@pytest.mark.parametrize("family", ANYRES)
def test_load_vlm_reads_geometry_and_caches(vlms, tiny_dirs, family):
    vlm = vlms[family]
    assert vlm.random_weights and "random weights" in vlm.label
    # cached: a second load is the same object (the session fixture's own may have left the LRU cache, which holds
    # gridvlm.limits' max_models while the fixture loads every family)
    again = load_vlm(tiny_dirs[family], device="cpu")
    assert load_vlm(tiny_dirs[family], device="cpu") is again
    cfg = vlm.model.config
    assert vlm.geometry.grid_pinpoints == cfg.image_grid_pinpoints
    assert vlm.geometry.tile_size == cfg.vision_config.image_size
    assert vlm.geometry.select_strategy == cfg.vision_feature_select_strategy
    assert vlm.context_length == cfg.text_config.max_position_embeddings


@pytest.mark.parametrize("family", LLAVA)
@pytest.mark.parametrize("size", SIZES + [(1280, 960)])
def test_native_plan_counts_what_the_processor_counts(vlms, family, size):
    vlm = vlms[family]
    p = vlm.native_plan(size)
    assert p.strategy == family
    if family == "llava-onevision":
        assert p.params["max_features_tiles"] == 9  # read from vision_aspect_ratio "anyres_max_9"
    inputs = vlm.processor(images=noise_image(*size), text="<image>", return_tensors="pt")
    assert int((inputs["input_ids"] == vlm.image_token_id).sum()) == p.token_count


# ------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("family", LLAVA)
@pytest.mark.parametrize("size", SIZES)
def test_plan_mode_with_native_plan_equals_transformers(vlms, family, size):
    vlm = vlms[family]
    image = noise_image(*size, seed=sum(size))
    native = prepare_inputs(vlm, image, "native", [], "What is in this picture?")
    mine = prepare_inputs(vlm, image, vlm.native_plan(image), [], "What is in this picture?")
    assert torch.equal(native.input_ids, mine.input_ids)
    assert mine.visual_tokens == native.visual_tokens == vlm.native_plan(image).token_count
    assert not mine.out_of_distribution

    ref_embeds, ref_logits = reference_embeds_and_logits(vlm, native.kwargs)
    embeds = mine.kwargs["inputs_embeds"]
    assert embeds.dtype == torch.float32
    assert (embeds - ref_embeds).abs().max().item() <= 1e-6
    with torch.inference_mode():
        logits = vlm.model(inputs_embeds=embeds, attention_mask=mine.kwargs["attention_mask"]).logits[0, -1]
    assert (logits - ref_logits).abs().max().item() <= 1e-5
    assert int(logits.argmax()) == int(ref_logits.argmax())


def test_onevision_pooled_sequence_equals_get_image_features(vlms):
    """anyres_max_9's bilinear pooling (1280×960: 81×108 features → 70×93) against the model's own code."""
    vlm = vlms["llava-onevision"]
    image = noise_image(1280, 960, seed=3)
    p = vlm.native_plan(image)
    assert p.notes and "resized bilinearly" in p.notes[0]
    inputs = vlm.processor(images=image, text="<image>", return_tensors="pt")
    with torch.inference_mode():
        ref = vlm.model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"],
                                                 vision_aspect_ratio="anyres_max_9").pooler_output[0]
    seq = encode(vlm, image, p)
    assert seq.embeds.shape == ref.shape == (p.token_count, vlm.model.config.text_config.hidden_size)
    assert (seq.embeds - ref).abs().max().item() <= 1e-6


@pytest.mark.parametrize("family", ANYRES)
@pytest.mark.parametrize("size", SIZES + [(1280, 960)])
def test_native_layout_matches_the_plan(vlms, family, size):
    """Every position accounted for: per-view feature counts are the plan's tile token counts."""
    vlm = vlms[family]
    p = vlm.native_plan(size)
    embeds, layout = encode(vlm, noise_image(*size), p)
    assert len(layout) == embeds.shape[0] == p.token_count
    assert layout.per_view(p.num_views) == [v.token_count for v in p.views]
    assert int(layout.newline.sum()) == p.tokens["newlines"]
    g = vlm.geometry.features_side
    thumb = layout.view == 0
    assert thumb[: g * g].all() and thumb.sum() == g * g  # global view first, g×g, no newline
    features = ~layout.newline
    assert ((layout.feat_row[features] >= 0) & (layout.feat_row[features] < g)).all()
    assert ((layout.feat_col[features] >= 0) & (layout.feat_col[features] < g)).all()
    for view in range(1, p.num_views):  # grid position recorded with each feature is its view's
        at = layout.view == view
        if at.any():
            assert set(layout.row[at]) == {p.views[view].row} and set(layout.col[at]) == {p.views[view].col}
    # a newline ends every feature row: it follows the last feature of each row
    ends = np.flatnonzero(layout.newline)
    assert ends[-1] == len(layout) - 1
    assert not layout.newline[ends - 1].any()


# ------------------------------------------------------------------------------------------------ other plans


@pytest.mark.parametrize("strategy", ["internvl", "llava-uhd", "idefics3"])
def test_non_native_plan_runs_and_lays_out_views_on_its_grid(vlms, strategy):
    """Rule for plans that are not the model's: views resized to t×t, g² features each, a newline per tile
    feature row: positions = views·g² + rows·g (thumbnail block has none)."""
    vlm = vlms["llava-next"]
    image = noise_image(1024, 768)
    p = gridvlm.plan(image, strategy)
    g = vlm.geometry.features_side
    prepared = prepare_inputs(vlm, image, p, [], "Describe it.", max_new_tokens=4)
    seq = prepared.visual
    rows, _ = p.grid
    expected = p.num_views * g * g + rows * g
    assert len(seq.layout) == seq.embeds.shape[0] == prepared.visual_tokens == expected
    assert seq.out_of_distribution and any("out of distribution" in n for n in seq.notes)
    assert seq.layout.per_view(p.num_views) == [g * g] * p.num_views
    if p.thumbnail is not None:
        thumb_index = p.views.index(p.thumbnail)
        assert (seq.layout.view[seq.layout.view >= 0] == thumb_index).sum() == g * g
    with torch.inference_mode():
        logits = vlm.model(inputs_embeds=prepared.kwargs["inputs_embeds"]).logits
    assert torch.isfinite(logits).all()


def test_smaller_llava_next_plan_keeps_its_own_token_count(vlms):
    """A llava-next plan with fewer pinpoints (fit_budget) is packed like the model's own: plan.token_count."""
    vlm = vlms["llava-next"]
    image = noise_image(1024, 768)
    p = gridvlm.fit_budget(image, "llava-next", 1500)
    assert p.token_count <= 1500 and not vlm.is_native(p)
    seq = encode(vlm, image, p)
    assert len(seq) == p.token_count and seq.out_of_distribution
    assert seq.layout.per_view(p.num_views) == [v.token_count for v in p.views]


def test_plan_as_dict_and_wrong_image(vlms):
    vlm = vlms["llava-next"]
    image = noise_image(500, 400)
    p = vlm.native_plan(image)
    assert torch.equal(encode(vlm, image, Plan.from_dict(p.to_dict())).embeds, encode(vlm, image, "native").embeds)
    with pytest.raises(ModelError, match="500×400 image but this image is 300×900"):
        encode(vlm, noise_image(300, 900), p)


# ------------------------------------------------------------------------------------------------ registry and cache


def test_adapters_are_discovered_and_name_their_strategy():
    from gridvlm.models.adapter import get_adapter

    assert {"llava-next", "llava-onevision"} <= set(FAMILIES)
    seen = set()
    for name in FAMILIES:
        adapter = get_adapter(name)
        assert adapter.name == name and name in gridvlm.list_strategies()  # its native plan is a strategy's
        assert not seen & set(adapter.model_types)
        seen |= set(adapter.model_types)
    with pytest.raises(ModelError, match="no model family 'nope'"):
        get_adapter("nope")
    with pytest.raises(ModelError, match="make_tiny_vlm builds .*'llava-next'"):
        make_tiny_vlm("unused", "nope")


@pytest.mark.parametrize("family", LLAVA)
def test_layout_without_the_model_counts_what_encode_gives(vlms, family):
    """The adapter's layout is arithmetic on the plan: equal to the encoded sequence's, position by position."""
    from gridvlm.models import count_positions

    vlm = vlms[family]
    image = noise_image(900, 500)
    for p in (vlm.native_plan(image), gridvlm.plan(image, "internvl")):
        seq = encode(vlm, image, p)
        layout = vlm.family.layout(vlm.geometry, p)
        assert count_positions(vlm, p) == len(layout) == len(seq)
        assert layout.to_dict() == seq.layout.to_dict()


@pytest.mark.parametrize("family", FAMILIES)
def test_spellings_of_one_directory_are_one_model(vlms, tiny_dirs, family, monkeypatch):
    from gridvlm.models import is_loaded

    directory = tiny_dirs[family]
    monkeypatch.chdir(directory.parent)
    # the fixture's copy may have left the cache (it keeps limits.max_models models, fewer than the families)
    loaded = load_vlm(directory, device="cpu")
    for spelling in (str(directory), f"{directory}/", directory.name, f"{directory.name}/", f"./{directory.name}"):
        assert load_vlm(spelling, device="cpu") is loaded, spelling
        assert is_loaded(spelling)
    assert not is_loaded(f"./{directory.name}", quantization="4bit")


# ------------------------------------------------------------------------------------------------ failures


def test_unknown_id_and_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="no model 'nobody/no-such-model'"):
        load_vlm("nobody/no-such-model", device="cpu")
    with pytest.raises(ModelError, match="no model directory"):
        load_vlm(tmp_path / "missing", device="cpu")
    with pytest.raises(ModelError, match="not a transformers checkpoint"):
        load_vlm(tmp_path, device="cpu")


def test_unsupported_family(tmp_path):
    from transformers import GPT2Config

    GPT2Config().save_pretrained(tmp_path)  # a text-only model: no family reads it
    with pytest.raises(ModelError, match="gpt2 model; gridvlm.models runs .*llava-next"):
        load_vlm(tmp_path, device="cpu")


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_bitsandbytes_needs_cuda(tiny_dirs, quantization):
    with pytest.raises(ModelError, match=f"{quantization} quantization runs through bitsandbytes on a CUDA GPU"):
        load_vlm(tiny_dirs["llava-next"], device="cpu", quantization=quantization)
    with pytest.raises(ModelError, match="quantization must be one of"):
        load_vlm(tiny_dirs["llava-next"], device="cpu", quantization="3bit")


@pytest.mark.parametrize("plan", ["native", "plan"])
def test_over_long_prompt_is_refused_before_generating(vlms, plan):
    from gridvlm.models import chat

    vlm = vlms["llava-next"]
    image = noise_image(1024, 768)
    with pytest.raises(ModelError, match=r"2340 of them visual.*8192-token context"):
        chat(vlm, image, "native" if plan == "native" else vlm.native_plan(image), [], "Hi", max_new_tokens=8000)
