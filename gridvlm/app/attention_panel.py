"""The Chat tab's attention panel: where the model looked while it answered.

`build_attention_panel(chat_state)` creates the controls and figures inside the current ``gr.Blocks`` context and
wires them; `chat_state` is the gr.State holding the last reply's `gridvlm.attention.ReplyRecord` (made by
`reply_record`). Handlers are module-level functions of plain values (tests call them directly); the model is
the shared `load_vlm` cache entry. What the attention is comes from `gridvlm.attention.attention_maps`; this
module keeps the captured weights and draws.

The captured weights of a reply are cached per (reply, source, heads), so moving the token picker, the layer
sliders or the opacity re-draws without running the model again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from gridvlm import attention as A
from gridvlm import viz
from gridvlm.errors import GridVLMError
from . import serving
from .errors import for_people

try:  # Hugging Face ZeroGPU: a GPU is attached only while a decorated function runs
    import spaces
except ImportError:
    spaces = None

WHOLE, QUESTION = A.WHOLE_ANSWER, A.QUESTION
SOURCES = A.SOURCES
HEAD_MODES = ("mean", "max", "one head")
HEAT_LONG_SIDE = 256  # heat cells on the image's long side
CACHE_SIZE = 4  # captured replies kept (LLM: layers × rows × visual positions float32 each)

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------------------
# Handlers


def token_choices(record: A.ReplyRecord | None) -> list[str]:
    """The token picker's entries: the whole answer, the question, then "k: token" per answer token."""
    return record.row_choices() if record else [WHOLE]


def controls_for(record: A.ReplyRecord | None, source: str) -> tuple[dict, dict, dict, dict]:
    """gr.update dicts for (token picker, first layer, last layer, head index) after a reply or a source switch."""
    if not record:
        return (_update(choices=[WHOLE], value=WHOLE), _update(maximum=1, value=0), _update(maximum=1, value=0),
                _update(maximum=1, value=0))
    layers = record.layer_choice(source)
    top = max(1, layers.count - 1)  # a slider needs minimum < maximum
    return (_update(choices=token_choices(record), value=WHOLE), _update(maximum=top, value=layers.first),
            _update(maximum=top, value=layers.last), _update(maximum=max(1, layers.heads - 1), value=0))


def show_attention(record: A.ReplyRecord | None, token: str, first_layer: float, last_layer: float, head_mode: str,
                   head_index: float, source: str, opacity: float) -> tuple[Any, Any, Any, str]:
    """(overlay figure, global-view figure, mass bar chart, summary) for the chosen token, layers and heads."""
    if not record:
        raise GridVLMError("no reply yet: chat about an image first, then look at where the model attended")
    heads = int(head_index) if head_mode == "one head" else head_mode
    first, last = sorted((int(first_layer), int(last_layer)))
    result = A.attention_maps(record, token, (first, last), heads, source,
                              cached=lambda key, _: _cached(key, lambda: capture_on_gpu(record, key)))
    what = (f"vision encoder, layers {first}–{last}" if source == A.VISION
            else f"LLM layers {first}–{last}, {token}")
    head_text = f"head {heads}" if isinstance(heads, int) else f"{heads} over heads"
    plan, maps = record.plan, result.view_maps
    size = A.heat_size(plan.image_size, HEAT_LONG_SIDE)
    image = _preview(record)
    overlay = viz.attention_figure(plan, image, A.to_image(maps, plan, size), opacity,
                                   title=f"attention on the tiles · {what} · {head_text}")
    glob = viz.attention_figure(plan, image, A.to_image(maps, plan, size, which="global"), opacity,
                                title="global view", show_tiles=False)
    mass = viz.attention_mass_figure(maps.masses())
    shares = result.shares
    summary = (f"**{what}** · {head_text}. Share of the attention to the image: tiles {100 * shares['tiles']:.1f}%, "
               f"global view {100 * shares['global view']:.1f}%, newlines {100 * shares['newlines']:.1f}% "
               "(separators, not pixels: an attention sink).")
    return overlay, glob, mass, summary


def redraw(record: A.ReplyRecord | None, token: str, first_layer: float, last_layer: float, head_mode: str,
           head_index: float, source: str, opacity: float, panel_open: bool) -> tuple:
    """The figures after an event that is not a request to draw (a new reply, a source switch, opening the panel):
    nothing while the panel is closed (no extra pass for a panel nobody looks at), empty figures when there is no
    reply, else `show_attention`."""
    import gradio as gr

    if not panel_open:
        return gr.skip()
    if not record:
        return None, None, None, ""
    return show_attention(record, token, first_layer, last_layer, head_mode, head_index, source, opacity)


def capture_on_gpu(record: A.ReplyRecord, key: tuple) -> Any:
    """The attention pass a cache key names (`gridvlm.attention.run_capture`); under ZeroGPU it runs inside
    @spaces.GPU, as generation does, so a GPU is attached while it runs."""
    return A.run_capture(record, key)


if spaces is not None:
    capture_on_gpu = spaces.GPU(capture_on_gpu)


def _cached(key: tuple, compute):
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = compute()
    with _CACHE_LOCK:
        _CACHE[key] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def _preview(record: A.ReplyRecord):
    def compute():
        from gridvlm.imaging import load_image

        image = record.image
        return viz.preview(image if hasattr(image, "mode") else load_image(image))

    return _cached(("preview", record.id), compute)


def _update(**kwargs) -> dict:
    import gradio as gr

    return gr.update(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Layout




def build_attention_panel(chat_state: Any) -> dict[str, Any]:
    """Controls and figures of the attention panel, created in the current Blocks context and wired to
    `chat_state` (its value: a ReplyRecord, or None before the first reply). Returns the components by
    name; after each reply the Chat tab triggers ``refresh`` (the controls) then ``redraw`` (the figures, only
    while the panel is open): ``reply_event.success(**panel["refresh"]).then(**panel["redraw"])``."""
    import gradio as gr

    panel_open = gr.State(False)
    with gr.Accordion("Where did the model look? (attention)", open=False, elem_id="attention-panel") as accordion:
        with gr.Row():
            source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Source", elem_id="attention-source")
            token = gr.Dropdown([WHOLE], value=WHOLE, label="Token", elem_id="attention-token",
                                info="Each answer token's row is the step that wrote it")
            head_mode = gr.Radio(list(HEAD_MODES), value="mean", label="Heads", elem_id="attention-heads")
        with gr.Row():
            first = gr.Slider(0, 1, value=0, step=1, label="First layer", elem_id="attention-first-layer")
            last = gr.Slider(0, 1, value=0, step=1, label="Last layer", elem_id="attention-last-layer")
            head_index = gr.Slider(0, 1, value=0, step=1, label="Head (for 'one head')", elem_id="attention-head")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", elem_id="attention-opacity")
        show = gr.Button("Show attention", variant="primary", elem_id="attention-show")
        summary = gr.Markdown(elem_id="attention-summary")
        with gr.Row():
            overlay = gr.Plot(label="Attention on the tiles", elem_id="attention-overlay", scale=2)
            glob = gr.Plot(label="Global view", elem_id="attention-global", scale=1)
        mass = gr.Plot(label="Attention mass per view", elem_id="attention-mass")

    inputs = [chat_state, token, first, last, head_mode, head_index, source, opacity]
    outputs = [overlay, glob, mass, summary]
    draw = for_people(show_attention)
    show.click(draw, inputs, outputs, **serving.MODEL)
    for control in (token, first, last, head_mode, head_index, opacity):
        control.input(draw, inputs, outputs, **serving.MODEL)  # cached weights: re-drawing is cheap
    controls = for_people(controls_for)
    refresh = dict(fn=controls, inputs=[chat_state, source], outputs=[token, first, last, head_index])
    again = dict(fn=for_people(redraw), inputs=[*inputs, panel_open], outputs=outputs, **serving.MODEL)
    source.input(**refresh).then(**again)
    accordion.expand(_opened, None, panel_open).then(**again)
    accordion.collapse(_closed, None, panel_open)
    return {
        "accordion": accordion, "panel_open": panel_open,
        "source": source, "token": token, "head_mode": head_mode, "first_layer": first, "last_layer": last,
        "head_index": head_index, "opacity": opacity, "show": show, "summary": summary, "overlay": overlay,
        "global": glob, "mass": mass,
        "refresh": refresh,  # after a reply: the controls for the new record …
        "redraw": again,  # … then its figures, when the panel is open
    }


def _opened() -> bool:
    return True


def _closed() -> bool:
    return False
