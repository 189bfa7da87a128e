"""Time to first token and decode speed: transformers' own path (native) vs gridvlm's plan mode, same plan.

    python bench/chat.py                              # tiny random-weight LLaVA-NeXT and OneVision, CPU
    python bench/chat.py --model llava-hf/llava-v1.6-mistral-7b-hf --device cuda
    python bench/chat.py --real-size                  # LLaVA-NeXT-7B-shaped random weights, bf16, CUDA only
    python bench/chat.py --family gemma3 --out bench/results/chat_gemma3.json   # native only (no plan mode)

Plan mode is run with the model's native plan, so both modes feed the model the same embeddings (tested) and
the difference is the overhead of gridvlm's path: gridvlm.pixel_values(exact=True) + its own feature layout
instead of the processor + pack_image_features. TTFT counts from the decoded PIL image to the first new token
(preprocessing, vision tower, prefill). Prints a table and writes bench/results/chat.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gridvlm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "gridvlm" / "app" / "assets" / "landscape_photo.jpg"
RESULTS = Path(__file__).parent / "results" / "chat.json"
TTFT_GOAL = 1.1  # plan-mode TTFT at most this multiple of native


class TimingStreamer:
    """Records when generate hands over each new token (the first put is the prompt)."""

    def __init__(self):
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        value.tolist()  # waits for the device
        self.times.append(time.perf_counter())

    def end(self):
        pass


def one_run(vlm, image, mode, new_tokens):
    import torch

    from gridvlm.models.conversation import generate_kwargs, prepare_inputs

    sync = torch.cuda.synchronize if vlm.device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    plan = "native" if mode == "native" else vlm.native_plan(image)
    prepared = prepare_inputs(vlm, image, plan, [], "Describe this image in detail.", new_tokens)
    streamer = TimingStreamer()
    gen = generate_kwargs(vlm, new_tokens, 0.0, 1.0, new_tokens)
    with torch.inference_mode():
        vlm.model.generate(**prepared.kwargs, **gen, streamer=streamer)
    times = streamer.times
    ttft = times[0] - start
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    return ttft, rate, prepared.prompt_tokens, prepared.visual_tokens, len(times)


def bench_model(vlm, image, runs, new_tokens, label):
    modes = ("native", "plan") if vlm.family.plan_mode else ("native",)  # native-only families: no plan mode
    for mode in modes:
        one_run(vlm, image, mode, 2)  # warm-up: kernels, caches, lazy imports
    samples = {mode: [] for mode in modes}
    info = None
    for _ in range(runs):
        for mode in modes:  # interleaved, so load from other processes hits both alike
            ttft, rate, prompt, visual, produced = one_run(vlm, image, mode, new_tokens)
            samples[mode].append((ttft, rate))
            info = (prompt, visual, produced)
    rows = []
    for mode, values in samples.items():
        rows.append({
            "model": label,
            "mode": mode,
            "ttft_ms": round(statistics.median(v[0] for v in values) * 1000, 1),
            "ttft_ms_min": round(min(v[0] for v in values) * 1000, 1),
            "tokens_per_s": round(statistics.median(v[1] for v in values), 1),
            "prompt_tokens": info[0],
            "visual_tokens": info[1],
            "new_tokens": info[2],
        })
    if len(rows) > 1:
        rows[1]["ttft_ratio_vs_native"] = round(rows[1]["ttft_ms"] / rows[0]["ttft_ms"], 3)
    return rows


def real_size_vlm(device):
    """LLaVA-NeXT-Mistral-7B-shaped: CLIP ViT-L/14-336 + Mistral-7B text config, random bf16 weights on CUDA.

    The tokenizer and processor are the tiny checkpoint's (same geometry); only prompt text tokenises differently.
    """
    import torch
    from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, MistralConfig

    from gridvlm.models import load_vlm, make_tiny_vlm
    from gridvlm.models.loading import VLM
    from gridvlm.strategies.anyres import LLAVA_NEXT_PINPOINTS

    tiny = load_vlm(make_tiny_vlm(Path(tempfile.mkdtemp(prefix="gridvlm-bench-")), "llava-next"), device="cpu")
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                       num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        text_config=MistralConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=8, vocab_size=32064,
                                  max_position_embeddings=32768, rope_theta=1e6, sliding_window=None),
        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS, image_token_index=tiny.image_token_id,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlavaNextForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    model.generation_config.pad_token_id = tiny.tokenizer.pad_token_id
    return VLM(model_id="llava-next-7b-shaped (random weights)", family=tiny.family, model=model,
               processor=tiny.processor, tokenizer=tiny.tokenizer,
               geometry=tiny.family.read_geometry(config, tiny.processor.image_processor), device=device,
               dtype=torch.bfloat16, random_weights=True)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads " \
           f"{torch.get_num_threads()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="hub id or directory (repeatable); default: tiny models")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--real-size", action="store_true", help="LLaVA-NeXT-7B-shaped random model (CUDA only)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--image", default=str(IMAGE))
    parser.add_argument("--family", action="append", help="tiny checkpoint of this family (repeatable); "
                        "native-only families get native TTFT alone")
    parser.add_argument("--out", default=None, help="default bench/results/chat.json (chat-<families>.json with "
                        "--family)")
    args = parser.parse_args()
    if args.out is None:
        args.out = str(RESULTS.with_name(f"chat-{'-'.join(args.family)}.json") if args.family else RESULTS)
    os.environ.setdefault("HF_HUB_OFFLINE", "1" if not args.model else os.environ.get("HF_HUB_OFFLINE", "0"))

    import torch

    from gridvlm.models import load_vlm, make_tiny_vlm

    image = gridvlm.load_image(args.image)
    rows = []
    if args.real_size:
        if not torch.cuda.is_available():
            print("--real-size needs a CUDA GPU; none here, skipped.")
            return
        device = "cuda" if args.device == "auto" else args.device
        rows += bench_model(real_size_vlm(device), image, args.runs, args.new_tokens, "llava-next-7b-shaped bf16")
    else:
        sources = args.model or [
            str(make_tiny_vlm(Path(tempfile.mkdtemp(prefix="gridvlm-bench-")) / fam, fam))
            for fam in (args.family or ("llava-next", "llava-onevision"))]
        for source in sources:
            vlm = load_vlm(source, device=args.device)
            device = vlm.device
            label = f"tiny {vlm.family.name}" if vlm.random_weights and not args.model else vlm.label
            rows += bench_model(vlm, image, args.runs, args.new_tokens, label)

    print(f"image {Path(args.image).name} {image.size[0]}×{image.size[1]}, {args.new_tokens} new tokens, "
          f"median of {args.runs}, device: {device_name(device)}")
    print(f"{'model':<28}{'mode':<8}{'visual':>8}{'prompt':>8}{'TTFT ms':>10}{'min ms':>9}{'tok/s':>9}{'ratio':>7}")
    for r in rows:
        ratio = r.get("ttft_ratio_vs_native")
        print(f"{r['model']:<28}{r['mode']:<8}{r['visual_tokens']:>8}{r['prompt_tokens']:>8}{r['ttft_ms']:>10.1f}"
              f"{r['ttft_ms_min']:>9.1f}{r['tokens_per_s']:>9.1f}{'' if ratio is None else f'{ratio:.2f}':>7}")
    ratios = [r["ttft_ratio_vs_native"] for r in rows if "ttft_ratio_vs_native" in r]
    verdict = ("n/a" if not ratios else "met" if all(x <= TTFT_GOAL for x in ratios) else "NOT met")
    worst = f"worst {max(ratios):.2f}×" if ratios else "no plan-mode rows: native-only families"
    print(f"goal plan-mode TTFT ≤ {TTFT_GOAL}× native: {verdict} ({worst})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "what": "time to first token and decode speed, native (transformers processor) vs gridvlm plan mode "
                "with the native plan",
        "device": device_name(device),
        "torch": torch.__version__,
        "image": {"name": Path(args.image).name, "size": list(image.size)},
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "goal_ttft_ratio": TTFT_GOAL,
        "goal_met": verdict == "met" if ratios else None,
        "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
