"""LLM → image attention: gridvlm's capture pass against transformers' output_attentions=True, ~3k visual tokens.

    python bench/attention.py [--repeats N] [--new-tokens N] [--image WxH] [--out bench/results/attention.json]
    python bench/attention.py --real-size      # a 7B-shaped random-weight LLaVA-NeXT, CUDA only

Three passes over the same finished reply (prompt with its visual positions + the generated answer):
- generation: `model.generate` of the answer from the prompt (SDPA, KV cache): what a chat turn costs anyway;
- capture: `gridvlm.attention.llm_attention`, every layer, heads averaged, rows = question + answer tokens,
  columns = visual positions; one extra SDPA forward with the hooks;
- output_attentions: the language model with eager attention and output_attentions=True (under SDPA
  transformers returns an empty tuple without an error), every layer's full (heads, S, S) weights.

Memory, extra over a plain forward of the same sequence:
- CUDA: torch.cuda.max_memory_allocated() during the pass minus the memory allocated before it (exact);
- CPU: the growth of the process's peak resident set (ru_maxrss) across the pass, measured in the order plain
  forward → capture → output_attentions, so each pass is compared with the peak before it. The allocator's
  granularity makes small numbers noisy (±1 MB), so the table also gives the bytes each method hands back
  (the captured array vs the attentions tuple), counted from the tensors themselves.
Times are medians of N runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gridvlm import attention as A  # noqa: E402

GOAL_MEMORY = 0.01  # capture's extra memory / output_attentions' extra memory
GOAL_TIME = 1.3  # capture pass / generation of the answer


def _peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _start(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return _peak_bytes(device)


def _timed(fn, device: str, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def measure(model, prompt_kwargs: dict, answer_ids: torch.Tensor, visual: np.ndarray, question: np.ndarray,
            device: str, repeats: int, native: tuple | None = None) -> dict:
    """The three passes on one finished reply; `prompt_kwargs` = input_ids + inputs_embeds (+ attention_mask).

    `native`: (vlm, model inputs of the whole finished sequence) for families that see only their own slicing
    (Qwen-VL: M-RoPE positions, token types): every pass then runs the whole model on those inputs, as the
    Chat tab's capture does; else only the language model runs on the spliced inputs_embeds."""
    lm = native[0].family.language_model(model) if native is not None else model.model.language_model
    n_new = len(answer_ids)
    if native is None:
        with torch.inference_mode():
            answer_embeds = model.get_input_embeddings()(answer_ids.to(device))[None]
        embeds = torch.cat((prompt_kwargs["inputs_embeds"], answer_embeds), dim=1)  # (1, S, D)
        prompt_tokens = prompt_kwargs["inputs_embeds"].shape[1]
        source, run = embeds, (lambda **kw: lm(inputs_embeds=embeds, use_cache=False, **kw))
    else:
        vlm, inputs = native
        embeds = inputs["pixel_values"]  # for the dtype in the report
        prompt_tokens = prompt_kwargs["input_ids"].shape[1]
        hf_model = model
        source, run = inputs, (lambda **kw: hf_model(**inputs, use_cache=False, **kw))
        model = vlm  # the capture reads the family's attention modules through the VLM
    rows = np.concatenate((question, A.writer_rows(prompt_tokens, n_new)))
    seq = prompt_tokens + n_new

    def plain():
        with torch.inference_mode():
            return run()

    def capture():
        return A.llm_attention(model, source, visual, rows, layers=None, heads="mean")

    def eager():
        before = lm.config._attn_implementation
        lm.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                return run(output_attentions=True).attentions
        finally:
            lm.set_attn_implementation(before)

    def generate():
        with torch.inference_mode():
            generator = model.model if native is not None else model
            return generator.generate(**prompt_kwargs, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)

    # memory first, in this order (CPU: ru_maxrss only grows); each pass once before, as the allocator warms up
    plain()
    capture()
    base = _start(device)
    plain()
    plain_extra = _peak_bytes(device) - base
    base = _start(device)
    captured = capture()
    capture_extra = _peak_bytes(device) - base
    base = _start(device)
    attentions = eager()
    eager_extra = _peak_bytes(device) - base
    eager_held = sum(a.numel() * a.element_size() for a in attentions)
    del attentions

    t_gen, _ = _timed(generate, device, repeats)
    t_cap, _ = _timed(capture, device, repeats)
    t_eager, attentions = _timed(eager, device, max(1, repeats // 2))
    del attentions
    cfg = lm.config
    return {
        "sequence": seq, "visual_positions": len(visual), "query_rows": len(rows), "new_tokens": n_new,
        "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
        "hidden": cfg.hidden_size, "dtype": str(embeds.dtype).removeprefix("torch."),
        "generation_s": t_gen, "capture_s": t_cap, "output_attentions_s": t_eager,
        "capture_over_generation": t_cap / t_gen, "output_attentions_over_generation": t_eager / t_gen,
        "plain_forward_extra_bytes": plain_extra, "capture_extra_bytes": capture_extra,
        "output_attentions_extra_bytes": eager_extra,
        "capture_result_bytes": int(captured.nbytes), "output_attentions_result_bytes": int(eager_held),
        "memory_ratio": max(capture_extra, 0) / max(eager_extra, 1),
        "held_ratio": captured.nbytes / max(eager_held, 1),
    }


def tiny_case(image_size: tuple[int, int], new_tokens: int, repeats: int) -> dict:
    """The chat path on a tiny LLaVA-NeXT: plan-mode inputs of a real (noise) image, CPU."""
    from PIL import Image

    from gridvlm.models import load_vlm, make_tiny_vlm, prepare_inputs

    with tempfile.TemporaryDirectory() as tmp:
        vlm = load_vlm(make_tiny_vlm(Path(tmp) / "next", "llava-next"), device="cpu")
        rng = np.random.default_rng(0)
        w, h = image_size
        image = Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h))
        prepared = prepare_inputs(vlm, image, vlm.native_plan(image), [], "What is in this picture? Describe it.")
        ids = prepared.input_ids[0]
        visual = (ids == vlm.image_token_id).nonzero().flatten().numpy()
        question = np.arange(visual[-1] + 1, len(ids))
        answer = torch.randint(10, 500, (new_tokens,), generator=torch.Generator().manual_seed(0))
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        row = measure(vlm.model, prepared.kwargs, answer, visual, question, "cpu", repeats)
    return {"case": f"tiny LLaVA-NeXT (CLIP 32×2, Mistral 64×2), {w}×{h} image", "device": "cpu", **row}


def native_case(family: str, image_size: tuple[int, int], new_tokens: int, repeats: int) -> dict:
    """A native-only family's chat path on its tiny checkpoint (CPU): the processor's inputs, the whole model."""
    from PIL import Image

    from gridvlm.models import load_vlm, make_tiny_vlm, prepare_inputs

    with tempfile.TemporaryDirectory() as tmp:
        vlm = load_vlm(make_tiny_vlm(Path(tmp) / family, family), device="cpu")
        rng = np.random.default_rng(0)
        w, h = image_size
        image = Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)).resize((w, h))
        prepared = prepare_inputs(vlm, image, "native", [], "What is in this picture? Describe it.")
        visual = np.asarray(prepared.visual_positions)
        question = np.arange(visual[-1] + 1, prepared.prompt_tokens)
        answer = torch.randint(10, 500, (new_tokens,), generator=torch.Generator().manual_seed(0))
        ids = prepared.input_ids[0].tolist() + answer.tolist()
        inputs = vlm.family.native_inputs(vlm, image, ids)
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        row = measure(vlm.model, prepared.kwargs, answer, visual, question, "cpu", repeats, native=(vlm, inputs))
    return {"case": f"tiny {family} native (whole model), {w}×{h} image", "device": "cpu", **row}


def shaped_model(shape: str, device: str, dtype):
    """A random-weight LLaVA-NeXT: "7b" = llava-v1.6-mistral-7b's shapes (CLIP-L/336 + Mistral-7B), "small" = a
    scaled-down check of the same code path."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, MistralConfig

    from gridvlm.strategies.anyres import LLAVA_NEXT_PINPOINTS

    if shape == "7b":
        text = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=32064, max_position_embeddings=32768)
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
    else:
        text = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=8,
                    num_key_value_heads=2, vocab_size=1024, max_position_embeddings=8192)
        vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=336, patch_size=14, projection_dim=768, **vision),
        text_config=MistralConfig(**text, sliding_window=None),
        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, image_token_index=text["vocab_size"] - 1,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaNextForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = 0
    return model.eval()


def shaped_case(shape: str, device: str, visual_tokens: int, new_tokens: int, repeats: int) -> dict:
    """Random-weight model of `shape`: a prompt of 8 text tokens, `visual_tokens` visual positions (random
    embeddings at the text embeddings' scale), 12 question tokens; LLM only (the vision tower is not timed)."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = shaped_model(shape, device, dtype)
    g = torch.Generator(device="cpu").manual_seed(1)
    image_id = model.config.image_token_id
    ids = torch.cat((torch.randint(10, 1000, (8,), generator=g), torch.full((visual_tokens,), image_id),
                     torch.randint(10, 1000, (12,), generator=g)))[None].to(device)
    with torch.inference_mode():
        embeds = model.get_input_embeddings()(ids)  # (1, P, D)
        scale = embeds[0, :8].std()
        embeds[0, 8:8 + visual_tokens] = torch.randn(visual_tokens, embeds.shape[-1], generator=g).to(
            device, dtype) * scale
    kwargs = {"input_ids": ids, "inputs_embeds": embeds, "attention_mask": torch.ones_like(ids)}
    visual = np.arange(8, 8 + visual_tokens)
    question = np.arange(8 + visual_tokens, ids.shape[1])
    answer = torch.randint(10, 1000, (new_tokens,), generator=g)
    row = measure(model, kwargs, answer, visual, question, device, repeats)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return {"case": f"{shape}-shaped random-weight LLaVA-NeXT (LLM only)", "device": name, **row}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def print_table(rows: list[dict]) -> None:
    head = (f"{'case':<58} {'S':>5} {'vis':>5} {'rows':>4} | {'gen s':>7} {'capture s':>9} {'out_attn s':>10} "
            f"{'cap/gen':>7} | {'cap MiB':>8} {'out_attn MiB':>12} {'mem ratio':>9} | {'held ratio':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case'][:58]:<58} {r['sequence']:>5} {r['visual_positions']:>5} {r['query_rows']:>4} | "
              f"{r['generation_s']:>7.3f} {r['capture_s']:>9.3f} {r['output_attentions_s']:>10.3f} "
              f"{r['capture_over_generation']:>7.2f} | {_mib(r['capture_extra_bytes']):>8} "
              f"{_mib(r['output_attentions_extra_bytes']):>12} {100 * r['memory_ratio']:>8.2f}% | "
              f"{100 * r['held_ratio']:>9.3f}%")
    print(f"goals: capture memory ≤ {100 * GOAL_MEMORY:.0f}% of output_attentions', capture time ≤ {GOAL_TIME}× "
          "generation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--image", default="1000x1000", help="WxH; 1000x1000 gives 2928 visual tokens")
    parser.add_argument("--real-size", action="store_true", help="also a 7B-shaped model (CUDA only)")
    parser.add_argument("--shaped-small", action="store_true", help="the --real-size code path, scaled down (CPU)")
    parser.add_argument("--family", action="append", help="a native-only family's tiny checkpoint instead of "
                        "LLaVA-NeXT plan mode (repeatable), e.g. internvl, idefics3, smolvlm")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/attention.json "
                        "(attention-<families>.json with --family)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.image.lower().split("x"))
    if args.out is None:
        name = f"attention-{'-'.join(args.family)}.json" if args.family else "attention.json"
        args.out = ROOT / "bench" / "results" / name

    if args.family:
        rows = [native_case(f, (w, h), args.new_tokens, args.repeats) for f in args.family]
    else:
        rows = [tiny_case((w, h), args.new_tokens, args.repeats)]
    if args.shaped_small:
        rows.append(shaped_case("small", "cpu", rows[0]["visual_positions"], args.new_tokens, args.repeats))
    if args.real_size:
        if torch.cuda.is_available():
            rows.append(shaped_case("7b", "cuda", rows[0]["visual_positions"], args.new_tokens, args.repeats))
        else:
            print("--real-size: skipped, no CUDA GPU on this machine (the 7B-shaped model needs ~15 GB of GPU "
                  "memory in bfloat16, plus ~19 GB for output_attentions at 3k tokens)")
    print_table(rows)
    result = {
        "unit": "seconds (median of --repeats runs); bytes",
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, CPython {platform.python_version()}, "
                   f"torch {torch.__version__}",
        "memory_method": "CUDA: max_memory_allocated during the pass minus allocated before; CPU: growth of "
                         "ru_maxrss over the previous peak (plain forward → capture → output_attentions)",
        "goals": {"memory_ratio": GOAL_MEMORY, "capture_over_generation": GOAL_TIME},
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
