"""The Chat tab: talk to a vision-language model about the Slice tab's image, cut natively or as the Slice plan.

`build_chat_tab(image_state, plan_state)` is called inside the app's `gr.Blocks`; the two gr.State objects hold
the Slice tab's image (a `display.Workspace`, a PIL image or a path) and plan (a `Plan` or `Plan.to_dict()`).
Handlers are module-level functions of plain values (tests call them directly). Loaded models are shared by
every user (gridvlm.models caches them); per-user data is the chat history, the user's choices and the last
reply's record for the attention panel (a `gridvlm.attention.ReplyRecord`, in a gr.State).

The model list is every family's real checkpoints (from its adapter, with sizes) and its tiny random-weight
checkpoint, grouped by family. Default: $GRIDVLM_MODEL; else a 7B-class model when a CUDA GPU is present, a small
real model when the hub is reachable, and offline a tiny random-weight checkpoint built on first use ("random
weights — answers are meaningless, geometry is real").
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .attention_panel import build_attention_panel
from gridvlm import GridVLMError, Plan
from gridvlm import limits
from gridvlm.models import ModelError
from . import serving
from .errors import for_people, with_status

try:  # Hugging Face ZeroGPU: a GPU is attached only while a decorated function runs
    import spaces
except ImportError:
    spaces = None

TINY_LABEL = "random weights — answers are meaningless, geometry is real"
# Defaults, first one whose family gridvlm.models runs: a 7B-class model on a GPU, a small real model on a CPU
# Space that can reach the hub, else (offline) the tiny random-weight checkpoint of the first CPU family.
GPU_DEFAULTS = ("Qwen/Qwen2.5-VL-7B-Instruct", "llava-hf/llava-v1.6-mistral-7b-hf")
CPU_DEFAULTS = ("HuggingFaceTB/SmolVLM-256M-Instruct", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf")
OFFLINE_FAMILIES = ("llava-next",)  # the tiny checkpoint offered first when the hub cannot be reached
NATIVE, SLICE_PLAN = "native", "current Slice-tab plan"
CUT_INFO = "native: the model's own processor; Slice-tab plan: gridvlm's views through the model's encoder"
QUANTIZATIONS = ["none", "4bit", "8bit"]
MAX_NEW_TOKENS = 256  # default of the slider
RANDOM_MIN_NEW_TOKENS = 8  # random weights may emit end-of-sequence at once: make them write at least this many
STATE_TTL_S = 1800  # s; the last reply's record (it holds the image) is dropped this long after it was set


# ---------------------------------------------------------------------------------------------------------------
# Models


def has_cuda() -> bool:
    """Whether a CUDA GPU is usable, without importing torch at app start when it is not loaded yet."""
    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    return Path("/proc/driver/nvidia/version").exists()


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model dropdown."""

    label: str  # what the dropdown shows: family, checkpoint and size
    value: str  # what loads: a hub id, or a tiny-checkpoint key of tiny_models()
    family: str  # gridvlm.models family name
    tiny: bool


def tiny_choice(family: str) -> str:
    """The dropdown value of a family's tiny random-weight checkpoint (built offline on first use)."""
    from gridvlm.models.adapter import get_adapter

    return f"tiny {get_adapter(family).title or family} ({TINY_LABEL})"


def catalogue() -> list[ModelChoice]:
    """Every family's real hub checkpoints (with their size) and its tiny checkpoint, grouped by family."""
    from gridvlm.models.adapter import get_adapter, list_adapters

    out = []
    adapters = sorted((get_adapter(name) for name in list_adapters()), key=lambda a: (a.title or a.name).lower())
    for adapter in adapters:
        title = adapter.title or adapter.name
        for checkpoint in adapter.checkpoints:
            cpu = ", runs on a CPU" if checkpoint.cpu_friendly else ""
            out.append(ModelChoice(f"{title} · {checkpoint.hub_id} ({checkpoint.size}{cpu})", checkpoint.hub_id,
                                   adapter.name, False))
        out.append(ModelChoice(f"{title} · tiny ({TINY_LABEL})", tiny_choice(adapter.name), adapter.name, True))
    return out


def hub_models() -> list[str]:
    """The real checkpoints the dropdown offers (the README's `models:` list)."""
    return [c.value for c in catalogue() if not c.tiny]


def tiny_models() -> dict[str, str]:
    """Tiny-checkpoint dropdown value → make_tiny_vlm family."""
    return {c.value: c.family for c in catalogue() if c.tiny}


def hub_reachable(timeout_s: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers (checked once per process): offline mode says no at once."""
    if "reachable" not in _HUB:
        if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
            _HUB["reachable"] = False
        else:
            import socket
            from urllib.parse import urlparse

            host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
            try:
                socket.create_connection((host, 443), timeout=timeout_s).close()
                _HUB["reachable"] = True
            except OSError:
                _HUB["reachable"] = False
    return _HUB["reachable"]


_HUB: dict[str, bool] = {}


def default_model() -> str:
    """$GRIDVLM_MODEL; else a 7B-class model with a GPU, a small real model on a CPU that reaches the hub, and
    offline the tiny random-weight checkpoint (labelled as such)."""
    if os.environ.get("GRIDVLM_MODEL"):
        return os.environ["GRIDVLM_MODEL"]
    offered = hub_models()
    if hub_reachable():
        for hub_id in (GPU_DEFAULTS if has_cuda() else CPU_DEFAULTS):
            if hub_id in offered:
                return hub_id
    tiny = tiny_models()
    families = [*OFFLINE_FAMILIES, *tiny.values()]
    return next(tiny_choice(f) for f in families if tiny_choice(f) in tiny)


def model_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for the dropdown, grouped by family; a default outside the list comes first."""
    pairs = [(c.label, c.value) for c in catalogue()]
    default = default_model()
    if default not in {v for _, v in pairs}:
        pairs.insert(0, (default, default))
    return pairs


def offered_values() -> set[str]:
    return {value for _, value in model_choices()}


def check_model_choice(choice: str) -> None:
    """On a public server only the listed models load; any other hub id or local directory needs the server's
    operator to set GRIDVLM_ALLOW_ANY_MODEL=1 (limits.allow_any_model)."""
    if choice in offered_values() or limits.active().allow_any_model:
        return
    listed = ", ".join(repr(c) for c in hub_models()[:4])
    raise ModelError(f"{choice[:80]!r} is not one of the models this server offers; choose one from the list "
                     f"({listed}, …). Other hub ids and local directories load only where whoever runs the server "
                     f"has set {limits.ENV['allow_any_model']}=1.")


_TINY_DIRS: dict[str, str] = {}
_TINY_LOCK = threading.Lock()


def model_source(choice: str) -> str:
    """The id or directory to load for a dropdown choice; tiny models are built into a temp dir once."""
    choice = (choice or "").strip()
    if not choice:
        raise ModelError("choose a model: a hub id such as 'llava-hf/llava-v1.6-mistral-7b-hf' or a local directory")
    check_model_choice(choice)
    tiny = tiny_models()
    if choice not in tiny:
        return choice
    with _TINY_LOCK:
        if choice not in _TINY_DIRS:
            from gridvlm.models import make_tiny_vlm

            family = tiny[choice]
            folder = serving.own_dir() / f"tiny-{family}"
            _TINY_DIRS[choice] = str(make_tiny_vlm(folder, family))
        return _TINY_DIRS[choice]


def get_vlm(choice: str, quantization: str = "none"):
    """The loaded model of a dropdown choice (loaded on first use, then shared)."""
    from gridvlm.models import load_vlm

    source = model_source(choice)
    try:
        return load_vlm(source, quantization=None if quantization in (None, "none") else quantization)
    except GridVLMError:
        raise
    except MemoryError:
        raise ModelError(f"{choice!r} does not fit in this server's memory; choose a smaller model") from None
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint fails in the loader's own ways
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ModelError(f"the checkpoint {choice!r} could not be read ({type(exc).__name__}"
                         f"{': ' + text if text else ''}); check its files or choose another model") from None




@for_people
def load_model(choice: str, quantization: str, progress: gr.Progress = gr.Progress()) -> str:
    """Load (or build, for the tiny models) the chosen model; returns the status text."""
    progress(0.05, desc="building the tiny checkpoint" if choice in tiny_models() else f"loading {choice}")
    model_source(choice)
    progress(0.3, desc=f"loading {choice}")
    vlm = get_vlm(choice, quantization)
    progress(1.0, desc="ready")
    return model_status(vlm)


def strategy_for_model(choice: str, quantization: str) -> dict:
    """The "how the image is cut" control for the loaded model: both choices where the family takes any gridvlm
    plan; native only (and saying so) where the model sees its own slicing only."""
    if not _is_loaded(choice, quantization):
        return gr.update(choices=[NATIVE, SLICE_PLAN], interactive=True, info=CUT_INFO)
    vlm = get_vlm(choice, quantization)
    if vlm.family.plan_mode:
        return gr.update(choices=[NATIVE, SLICE_PLAN], interactive=True, info=CUT_INFO)
    title = vlm.family.title or vlm.family.name
    return gr.update(choices=[NATIVE], value=NATIVE, interactive=False,
                     info=f"{title} models see only their own slicing ({vlm.family.name}); the usage line below "
                          "says which views it makes of this image")


def own_slicing(vlm, image_size: tuple[int, int]) -> str:
    """What the model's own processor makes of the image, in one line."""
    plan = vlm.native_plan(image_size)
    rows, cols = plan.grid
    tiles = sum(not v.is_thumbnail for v in plan.views)
    parts = [f"{tiles} tile{'s' * (tiles != 1)}" + (f" ({rows}×{cols})" if tiles > 1 else "")]
    if plan.thumbnail is not None:
        parts.append(f"a global view ({'first' if plan.thumbnail_position == 'first' else 'last'})")
    view = plan.views[0]
    return (f"{vlm.family.title or vlm.family.name} sees its own slicing: {' and '.join(parts)}, "
            f"views of {view.input_size[0]}×{view.input_size[1]} px")


def model_status(vlm) -> str:
    lines = [
        f"**{vlm.label}** — {vlm.family.name}, {vlm.device}, {str(vlm.dtype).removeprefix('torch.')}"
        f"{', ' + vlm.quantization if vlm.quantization else ''}",
        f"Encoder: {vlm.geometry.describe()}; context {vlm.context_length} tokens.",
    ]
    if vlm.random_weights:
        lines.append(f"⚠️ **{TINY_LABEL}.**")
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Image and plan from the Slice tab


def slice_image(image_value: Any):
    """The PIL image held by the Slice tab's state (a Workspace, a PIL image or a path)."""
    if image_value is None:
        from .display import NO_IMAGE

        raise ModelError(NO_IMAGE.replace("upload it again", "upload it again on the Slice tab"))
    image = getattr(image_value, "image", image_value)
    if isinstance(image, (str, Path, bytes)):
        from gridvlm import load_image

        image = load_image(image)
    return image


def chosen_plan(strategy: str, plan_value: Any) -> Plan | str:
    if strategy == NATIVE:
        return "native"
    if plan_value is None:
        raise ModelError("no Slice-tab plan yet: slice the image on the Slice tab, or choose 'native'")
    return plan_value if isinstance(plan_value, Plan) else Plan.from_dict(plan_value)


def usage_markdown(image_value: Any, plan_value: Any, choice: str, quantization: str, strategy: str,
                   max_new_tokens: float, history: list | None, message: str = "") -> str:
    """Visual tokens, context use and the out-of-distribution note for the next turn, before sending."""
    from gridvlm.models import prompt_size

    try:
        vlm = get_vlm(choice, quantization) if _is_loaded(choice, quantization) else None
        if vlm is None:
            return "Load a model to see how many tokens this image costs it."
        limits.check_chat(message or "", history or [])
        image = slice_image(image_value)
        plan = chosen_plan(strategy, plan_value)
        size = prompt_size(vlm, image.size, plan, history or [], message or "")
    except GridVLMError as exc:
        return f"⚠️ {exc}"
    total = size.prompt_tokens + int(max_new_tokens)
    if plan != "native" and not vlm.family.plan_mode:
        return (f"⚠️ {vlm.family.title or vlm.family.name} models see only their own slicing: choose 'native'. "
                f"{own_slicing(vlm, image.size)}.")
    name = f"{vlm.family.name} native plan" if plan == "native" else f"plan '{plan.strategy}'"
    text = (f"**{size.visual_tokens} visual tokens** ({name}) · prompt {size.prompt_tokens} + "
            f"{int(max_new_tokens)} new = **{total} of {size.context_length}** context tokens "
            f"({100 * total / size.context_length:.0f}%)")
    if plan == "native":
        text += f"\n\n{own_slicing(vlm, image.size)}."
    if not size.fits(int(max_new_tokens)):
        text += "\n\n⚠️ **Too long for the model's context**: choose a plan with fewer tokens or fewer new tokens."
    if size.out_of_distribution:
        text += (f"\n\n⚠️ **Out of the model's training distribution**: {vlm.family.name} was trained on its own "
                 "slicing only; with this plan every view is encoded as if it were one of its own tiles"
                 + ("" if plan == "native" or plan.strategy == vlm.family.name
                    else f" ({vlm.family.plan_mode_rule(vlm.geometry)})") + ". Answers may be worse.")
    return text


def _is_loaded(choice: str, quantization: str) -> bool:
    """Whether the choice is loaded: a status read, it never waits for another user's load."""
    from gridvlm.models import is_loaded

    if choice in tiny_models() and choice not in _TINY_DIRS:
        return False
    return is_loaded(_TINY_DIRS.get(choice, choice or ""), None if quantization in (None, "none") else quantization)


# ---------------------------------------------------------------------------------------------------------------
# Chat


def _stream(choice: str, quantization: str, image, plan, history: list, message: str, max_new_tokens: int,
            temperature: float, top_p: float, min_new_tokens: int | None) -> Iterator[tuple[str, dict | None]]:
    """(reply so far, None) while generating, then (whole reply, the turn's ids and visual positions): plain values,
    so that the generator may run in another process (ZeroGPU)."""
    from gridvlm.models import chat, in_use

    vlm = get_vlm(choice, quantization)
    with in_use(vlm):  # the cache keeps this model while it replies
        reply = chat(vlm, image, plan, history, message, max_new_tokens=max_new_tokens, temperature=temperature,
                     top_p=top_p, min_new_tokens=min_new_tokens)
        for partial in reply:
            yield partial, None
    yield reply.text, {"sequence_ids": reply.sequence_ids, "prompt_tokens": reply.prompt_tokens,
                       "visual_positions": list(reply.visual_positions)}


if spaces is not None:  # the GPU is held only while a reply is generated
    _stream = spaces.GPU(_stream)


def respond(message: str, history: list | None, image_value: Any, plan_value: Any, choice: str, quantization: str,
            strategy: str, max_new_tokens: float = MAX_NEW_TOKENS, temperature: float = 0.0, top_p: float = 1.0,
            min_new_tokens: int | None = None) -> Iterator[tuple[list, str, Any]]:
    """Stream the reply: yields (chat history in gradio's messages format, the cleared message box, the reply record).

    The record (`gridvlm.attention.reply_record`, for the attention panel) is `gr.skip()` while the reply streams
    and the finished reply's record in the last value. Random-weight models write at least
    RANDOM_MIN_NEW_TOKENS tokens unless `min_new_tokens` says otherwise.
    """
    history = list(history or [])
    message = (message or "").strip() if isinstance(message, str) else ""
    if not message:
        raise gr.Error("type a message first", print_exception=False)
    try:
        limits.check_chat(message, history)  # before anything is tokenised
        from gridvlm.attention import reply_record
        from gridvlm.models import prompt_size
        from gridvlm.models.conversation import check_context

        image = slice_image(image_value)
        plan = chosen_plan(strategy, plan_value)
        vlm = get_vlm(choice, quantization)
        size = prompt_size(vlm, image.size, plan, history, message)  # refuse an over-long turn before showing it
        check_context(vlm, size.prompt_tokens, size.visual_tokens, int(max_new_tokens))
        if min_new_tokens is None and vlm.random_weights:
            min_new_tokens = min(RANDOM_MIN_NEW_TOKENS, int(max_new_tokens))
        shown = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield list(shown), "", gr.skip()
        replies = _stream(choice, quantization, image, plan, history, message, int(max_new_tokens),
                          float(temperature), float(top_p), min_new_tokens)
        turn = None
        for partial, turn in replies:
            shown[-1] = {"role": "assistant", "content": partial}
            if turn is None:
                yield list(shown), "", gr.skip()
        if turn is None:  # pragma: no cover - _stream always ends with the turn's ids
            raise ModelError("generation ended without its token ids")
        record = reply_record(vlm, image, plan, turn["sequence_ids"], turn["prompt_tokens"],
                              visual_positions=turn["visual_positions"])
        yield list(shown), "", record
    except GridVLMError as exc:
        raise gr.Error(str(exc), print_exception=False) from None


respond = for_people(respond)  # MemoryError and other failures become sentences too


def lock_input() -> tuple[dict, dict]:
    """While a reply streams: Send and the message box are disabled."""
    return gr.update(interactive=False), gr.update(interactive=False)


def unlock_input() -> tuple[dict, dict]:
    return gr.update(interactive=True), gr.update(interactive=True)


def clear_chat() -> tuple[list, str, None]:
    """An empty chat, message box and reply record."""
    return [], "", None


# ---------------------------------------------------------------------------------------------------------------
# Layout


def build_chat_tab(image_state: gr.State, plan_state: gr.State) -> dict[str, Any]:
    """The Chat tab with its attention panel; call inside the app's gr.Blocks with the Slice tab's image and plan
    states. Returns the components by name (the attention panel's under "attention")."""
    chat_state = gr.State(None, time_to_live=STATE_TTL_S)  # the last finished reply's record
    with gr.Tab("Chat", id="chat") as tab:
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                anything = limits.active().allow_any_model
                model = gr.Dropdown(model_choices(), value=default_model(), allow_custom_value=anything,
                                    label="Model (hub id or local directory)" if anything else "Model",
                                    elem_id="chat-model")
                quantization = gr.Radio(QUANTIZATIONS, value="none", label="Quantization (bitsandbytes, CUDA only)",
                                        elem_id="chat-quantization")
                load = gr.Button("Load model", elem_id="chat-load")
                status = gr.Markdown("No model loaded yet.", elem_id="chat-model-status")
                problem = gr.Markdown(elem_id="chat-status")  # what went wrong, kept after the toast is gone
                strategy = gr.Radio([NATIVE, SLICE_PLAN], value=NATIVE, label="How the image is cut",
                                    info=CUT_INFO, elem_id="chat-strategy")
                max_new = gr.Slider(1, 2048, value=MAX_NEW_TOKENS, step=1, label="Max new tokens",
                                    elem_id="chat-max-new-tokens")
                temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p (when sampling)")
            with gr.Column(scale=2):
                usage = gr.Markdown(elem_id="chat-usage")
                chatbot = gr.Chatbot(label="Chat about the Slice tab's image", height=460, elem_id="chat-bot")
                message = gr.Textbox(label="Message", placeholder="What is in this image?", elem_id="chat-message")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="chat-send")
                    clear = gr.Button("Clear", elem_id="chat-clear")
        panel = build_attention_panel(chat_state)

        usage_in = [image_state, plan_state, model, quantization, strategy, max_new, chatbot]
        loaded = load.click(load_model, [model, quantization], status, **serving.MODEL)
        with_status(loaded, problem)
        loaded.then(strategy_for_model, [model, quantization], strategy).then(usage_markdown, usage_in, usage)
        # The image and plan change on the Slice tab only: re-count on coming here. (No .change on those states:
        # gradio hashes a listened-to state after every event, and a Workspace holding a PIL image cannot be hashed.)
        for event in (tab.select, strategy.change, max_new.release, quantization.change):
            event(usage_markdown, usage_in, usage)
        chat_in = [message, chatbot, image_state, plan_state, model, quantization, strategy, max_new, temperature,
                   top_p]
        for event in (send.click, message.submit):
            # Send and the message box stay locked until the reply has finished, so a second message cannot cut
            # the first reply short in the history; they unlock whether the reply succeeded or failed.
            locked = event(lock_input, None, [send, message], queue=False, show_progress="hidden")
            replied = locked.then(respond, chat_in, [chatbot, message, chat_state], **serving.MODEL)
            with_status(replied, problem)
            replied.then(unlock_input, None, [send, message], queue=False, show_progress="hidden")
            replied.then(strategy_for_model, [model, quantization], strategy).then(usage_markdown, usage_in, usage)
            replied.success(**panel["refresh"]).then(**panel["redraw"])
        cleared = clear.click(clear_chat, None, [chatbot, message, chat_state])
        cleared.then(usage_markdown, usage_in, usage)
        cleared.then(**panel["refresh"]).then(**panel["redraw"])
    return {"tab": tab, "model": model, "quantization": quantization, "load": load, "status": status,
            "strategy": strategy, "max_new_tokens": max_new, "chatbot": chatbot, "message": message, "send": send,
            "clear": clear, "usage": usage, "chat_state": chat_state, "attention": panel}
