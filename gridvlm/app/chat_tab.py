"""The Chat tab: talk to a vision-language model about the Slice tab's image, cut natively or as the Slice plan.

`build_chat_tab(image_state, plan_state)` is called inside the app's `gr.Blocks`; the two gr.State objects hold
the Slice tab's image (a `display.Workspace`, a PIL image or a path) and plan (a `Plan` or `Plan.to_dict()`).
Handlers are module-level functions of plain values (tests call them directly). Loaded models are shared by
every user (gridvlm.models caches them); per-user data is the chat history, the user's choices and the last
reply's record for the attention panel (a `gridvlm.attention.ReplyRecord`, in a gr.State).

Default model: $GRIDVLM_MODEL; else llava-hf/llava-v1.6-mistral-7b-hf when a CUDA GPU is present; else a tiny
random-weight LLaVA-NeXT built offline on first use ("random weights — answers are meaningless, geometry is real").
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
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

GPU_MODEL = "llava-hf/llava-v1.6-mistral-7b-hf"
TINY_LABEL = "random weights — answers are meaningless, geometry is real"
TINY_MODELS = {  # dropdown choice -> make_tiny_vlm family
    f"tiny LLaVA-NeXT ({TINY_LABEL})": "llava-next",
    f"tiny LLaVA-OneVision ({TINY_LABEL})": "llava-onevision",
}
HUB_MODELS = [GPU_MODEL, "llava-hf/llava-v1.6-vicuna-7b-hf", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
              "llava-hf/llava-onevision-qwen2-7b-ov-hf"]
NATIVE, SLICE_PLAN = "native", "current Slice-tab plan"
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


def default_model() -> str:
    return os.environ.get("GRIDVLM_MODEL") or (GPU_MODEL if has_cuda() else next(iter(TINY_MODELS)))


def model_choices() -> list[str]:
    return list(dict.fromkeys([default_model(), *HUB_MODELS, *TINY_MODELS]))


def check_model_choice(choice: str) -> None:
    """On a public server only the listed models load; any other hub id or local directory needs the server's
    operator to set GRIDVLM_ALLOW_ANY_MODEL=1 (limits.allow_any_model)."""
    if choice in model_choices() or limits.active().allow_any_model:
        return
    listed = ", ".join(repr(c) for c in model_choices()[:4])
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
    if choice not in TINY_MODELS:
        return choice
    with _TINY_LOCK:
        if choice not in _TINY_DIRS:
            from gridvlm.models import make_tiny_vlm

            family = TINY_MODELS[choice]
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
    progress(0.05, desc="building the tiny checkpoint" if choice in TINY_MODELS else f"loading {choice}")
    model_source(choice)
    progress(0.3, desc=f"loading {choice}")
    vlm = get_vlm(choice, quantization)
    progress(1.0, desc="ready")
    return model_status(vlm)


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
    name = f"{vlm.family.name} native plan" if plan == "native" else f"plan '{plan.strategy}'"
    text = (f"**{size.visual_tokens} visual tokens** ({name}) · prompt {size.prompt_tokens} + "
            f"{int(max_new_tokens)} new = **{total} of {size.context_length}** context tokens "
            f"({100 * total / size.context_length:.0f}%)")
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

    if choice in TINY_MODELS and choice not in _TINY_DIRS:
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
                                    info="native: the model's own processor; Slice-tab plan: gridvlm's views "
                                         "through the model's encoder", elem_id="chat-strategy")
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
        loaded.then(usage_markdown, usage_in, usage)
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
            replied.then(usage_markdown, usage_in, usage)
            replied.success(**panel["refresh"]).then(**panel["redraw"])
        cleared = clear.click(clear_chat, None, [chatbot, message, chat_state])
        cleared.then(usage_markdown, usage_in, usage)
        cleared.then(**panel["refresh"]).then(**panel["redraw"])
    return {"tab": tab, "model": model, "quantization": quantization, "load": load, "status": status,
            "strategy": strategy, "max_new_tokens": max_new, "chatbot": chatbot, "message": message, "send": send,
            "clear": clear, "usage": usage, "chat_state": chat_state, "attention": panel}
