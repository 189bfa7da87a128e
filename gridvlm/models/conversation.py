"""Multi-turn chat about one image, in the model's own (native) mode or on any gridvlm plan (plan mode).

Native mode is transformers' own path: the processor expands the image placeholder and makes pixel values, the
model encodes them. Plan mode tokenises the same chat-template text, expands the placeholder to as many image
tokens as the plan's visual sequence has positions, and feeds `inputs_embeds` in which that span is replaced
by `encode(vlm, image, plan)`. With the native plan both modes give the same embeddings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..geometry import Plan
from .visual import NATIVE, VisualSequence, count_positions, encode, resolve_plan, splice_visual
from .errors import ModelError
from .loading import VLM

History = Sequence[Any]  # [(user, assistant), …] pairs or [{"role": …, "content": …}, …] messages


def to_messages(history: History, message: str) -> list[dict[str, Any]]:
    """Chat-template messages with the image in the first user turn and `message` as the last user turn.

    `history` holds earlier turns: (user, assistant) pairs, or role/content dicts (gradio's "messages" format;
    content a string or a list of {"type": "text"} parts; non-text content such as files is skipped).
    """
    turns: list[tuple[str, str]] = []
    for item in history or ():
        if isinstance(item, dict):
            role, text = item.get("role"), _text_of(item.get("content"))
            if role not in ("user", "assistant") or text is None:
                continue
            turns.append((role, text))
        else:
            user, assistant = item
            turns.append(("user", str(user)))
            if assistant is not None:
                turns.append(("assistant", str(assistant)))
    turns.append(("user", str(message)))
    messages = []
    for role, text in turns:
        if messages and messages[-1]["role"] == role:  # two user turns in a row: one message
            messages[-1]["content"].append({"type": "text", "text": "\n" + text})
            continue
        messages.append({"role": role, "content": [{"type": "text", "text": text}]})
    messages[0]["content"].insert(0, {"type": "image"})
    return messages


def _text_of(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "".join(texts) if texts else None
    if isinstance(content, dict) and content.get("type") == "text":
        return content.get("text", "")
    return None


def prompt_text(vlm: VLM, history: History, message: str) -> str:
    """The chat-template text of the conversation, one image placeholder in the first user turn."""
    messages = to_messages(history, message)
    template_owner = vlm.processor if getattr(vlm.processor, "chat_template", None) else vlm.tokenizer
    if not getattr(template_owner, "chat_template", None):
        raise ModelError(f"{vlm.model_id!r} has no chat template in its processor or tokenizer files")
    return template_owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@dataclass(eq=False)
class PreparedInputs:
    """Everything `model.generate` needs for one turn, and what the UI shows about it."""

    kwargs: dict[str, Any]  # input_ids, attention_mask and pixel_values (native) or inputs_embeds (plan mode)
    prompt_tokens: int  # text + visual positions
    visual_tokens: int
    plan: Plan
    visual: VisualSequence | None  # plan mode only
    out_of_distribution: bool
    context_length: int
    visual_positions: tuple[int, ...] = ()  # where the visual sequence sits in input_ids (image-token positions)

    @property
    def input_ids(self):
        return self.kwargs["input_ids"]


def prepare_inputs(vlm: VLM, image: Any, plan: Plan | str, history: History, message: str,
                   max_new_tokens: int = 0) -> PreparedInputs:
    """Model inputs of one chat turn. plan="native": transformers' processor; else plan mode (gridvlm's path).

    Raises ModelError, before any generation, when prompt + max_new_tokens exceed the model's context.
    """
    import torch

    from ..imaging import load_image

    image = load_image(image)
    prompt = prompt_text(vlm, history, message)
    if isinstance(plan, str) and plan == NATIVE:
        inputs = vlm.processor(images=image, text=prompt, return_tensors="pt",
                               **vlm.family.processor_kwargs(vlm.geometry))
        kwargs = {k: v.to(vlm.device) for k, v in inputs.items() if hasattr(v, "to")}
        for name, value in kwargs.items():
            if name != "input_ids" and value.is_floating_point():
                kwargs[name] = value.to(vlm.model.dtype)
        resolved, visual, ood = vlm.native_plan(image.size), None, False
        positions = native_visual_span(vlm, prompt, kwargs["input_ids"][0].tolist(), resolved)
        n_visual = len(positions)
    else:
        resolved = resolve_plan(vlm, image.size, plan)
        ids = vlm.tokenizer(prompt, return_tensors="pt")["input_ids"][0]  # (text tokens,)
        spots = (ids == vlm.image_token_id).nonzero().flatten().tolist()
        if len(spots) != 1:
            raise ModelError(f"the chat template of {vlm.model_id!r} gave {len(spots)} image placeholders, not 1")
        visual = encode(vlm, image, resolved)
        n_visual, at = len(visual), spots[0]
        positions = tuple(range(at, at + n_visual))
        filler = torch.full((n_visual,), vlm.image_token_id, dtype=ids.dtype)
        ids = torch.cat((ids[:at], filler, ids[at + 1:]))[None].to(vlm.device)  # (1, prompt tokens)
        embeds = splice_visual(vlm, ids, positions, visual.embeds)  # (1, prompt tokens, hidden)
        kwargs = {"input_ids": ids, "inputs_embeds": embeds, "attention_mask": torch.ones_like(ids)}
        ood = visual.out_of_distribution
    prepared = PreparedInputs(kwargs, int(kwargs["input_ids"].shape[1]), n_visual, resolved, visual, ood,
                              vlm.context_length, positions)
    check_context(vlm, prepared.prompt_tokens, prepared.visual_tokens, max_new_tokens)
    return prepared


def native_visual_span(vlm: VLM, prompt: str, expanded_ids: Sequence[int], plan: Plan) -> tuple[int, ...]:
    """Where the image sits in the processor's `expanded_ids`: the positions that replaced the chat template's
    image placeholder (image tokens, and the markers, row breaks and newlines the processor writes among them),
    as many as the family's layout of `plan` has. ModelError when the processor's sequence disagrees with it."""
    found = vlm.family.native_positions(vlm, prompt, expanded_ids, plan)
    if found is not None:
        return found
    placeholder = vlm.family.placeholder_token_id(vlm)
    template_ids = vlm.tokenizer(prompt)["input_ids"]
    spots = [i for i, t in enumerate(template_ids) if t == placeholder]
    count = count_positions(vlm, plan)
    image_tokens = [i for i, t in enumerate(expanded_ids) if t == vlm.image_token_id]
    if len(spots) != 1:
        raise ModelError(f"the chat template of {vlm.model_id!r} gave {len(spots)} image placeholders, not 1")
    start = spots[0]
    if (len(expanded_ids) != len(template_ids) - 1 + count or not image_tokens
            or image_tokens[0] < start or image_tokens[-1] >= start + count):
        raise ModelError(f"{vlm.family.name}: the processor wrote {len(expanded_ids) - len(template_ids) + 1} "
                         f"positions for the image where gridvlm's layout has {count}; gridvlm cannot say which "
                         "position shows which pixels for this checkpoint")
    return tuple(range(start, start + count))


@dataclass(frozen=True)
class PromptSize:
    """What a turn will cost before anything runs: counted from the template and the plan, no encoding."""

    prompt_tokens: int  # text + visual positions
    visual_tokens: int
    context_length: int
    out_of_distribution: bool

    def fits(self, max_new_tokens: int) -> bool:
        return self.prompt_tokens + max_new_tokens <= self.context_length


def prompt_size(vlm: VLM, image_size: tuple[int, int], plan: Plan | str, history: History,
                message: str) -> PromptSize:
    """Prompt and visual token counts of a turn; equal to what prepare_inputs builds (tested)."""
    resolved = resolve_plan(vlm, tuple(image_size), plan)
    native = isinstance(plan, str) or vlm.is_native(resolved)
    visual = count_positions(vlm, resolved)
    prompt = prompt_text(vlm, history, message)
    counted = vlm.family.native_prompt_tokens(vlm, prompt, resolved) if native else None
    if counted is None:
        counted = len(vlm.tokenizer(prompt)["input_ids"]) - 1 + visual  # minus the placeholder
    return PromptSize(counted, visual, vlm.context_length, not native)


def check_context(vlm: VLM, prompt_tokens: int, visual_tokens: int, max_new_tokens: int) -> None:
    total = prompt_tokens + max_new_tokens
    if total > vlm.context_length:
        raise ModelError(
            f"this turn needs {prompt_tokens} prompt tokens ({visual_tokens} of them visual) + {max_new_tokens} new "
            f"tokens = {total}, more than the {vlm.context_length}-token context of {vlm.label}. Use a plan with "
            f"fewer visual tokens, start a new chat, or lower max_new_tokens.")


def generate_kwargs(vlm: VLM, max_new_tokens: int, temperature: float, top_p: float,
                    min_new_tokens: int | None) -> dict[str, Any]:
    """Greedy when temperature is 0; else sampling with temperature and top_p."""
    out: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "pad_token_id": vlm.tokenizer.pad_token_id
                           if vlm.tokenizer.pad_token_id is not None else vlm.tokenizer.eos_token_id}
    if temperature and temperature > 0:
        out.update(do_sample=True, temperature=float(temperature), top_p=float(top_p))
    else:
        out.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if min_new_tokens:
        out["min_new_tokens"] = int(min_new_tokens)
    return out


class ChatReply(Iterator[str]):
    """The reply of one chat turn: iterate for the reply so far (each value replaces the last).

    Once iteration has finished, `sequence_ids` holds the prompt's ids (the image placeholder expanded to the
    visual positions, as `prepared.input_ids`) followed by the generated ids, and `prepared.visual_positions`
    where the image sits in them: what `gridvlm.attention.reply_record` needs.
    """

    def __init__(self, prepared: PreparedInputs):
        self.prepared = prepared
        self.text = ""
        self.sequence_ids: list[int] | None = None
        self._parts: Iterator[str] = iter(())

    def __next__(self) -> str:
        self.text = next(self._parts)
        return self.text

    @property
    def prompt_tokens(self) -> int:
        return self.prepared.prompt_tokens

    @property
    def visual_positions(self) -> tuple[int, ...]:
        return self.prepared.visual_positions

    def _finish(self, out) -> None:
        """`out`: generate's (1, prompt + new) ids."""
        new = out[0, self.prepared.prompt_tokens:].tolist()
        self.sequence_ids = self.prepared.input_ids[0].tolist() + [int(t) for t in new]


def chat(vlm: VLM, image: Any, plan: Plan | str, history: History, message: str,
         max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, stream: bool = True,
         min_new_tokens: int | None = None) -> ChatReply:
    """Generate the assistant's reply to `message`, yielding the reply so far (each value replaces the last).

    `plan`: "native" (transformers' own processing) or a gridvlm Plan (plan mode). Greedy unless
    temperature > 0. `stream=False` yields once, the whole reply. Raises ModelError before generating when the
    prompt and max_new_tokens do not fit the model's context. The returned `ChatReply` also holds the turn's
    token ids once it is exhausted.
    """
    from transformers import TextIteratorStreamer

    if max_new_tokens < 1:
        raise ModelError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
    prepared = prepare_inputs(vlm, image, plan, history, message, max_new_tokens)
    gen = generate_kwargs(vlm, max_new_tokens, temperature, top_p, min_new_tokens)
    reply = ChatReply(prepared)
    if not stream:
        reply._parts = _whole_reply(vlm, prepared, gen, reply)
        return reply
    streamer = TextIteratorStreamer(vlm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    reply._parts = _streamed(vlm, prepared, gen, streamer, reply)
    return reply


def _run(vlm: VLM, prepared: PreparedInputs, gen: dict[str, Any]):
    import torch

    with torch.inference_mode():
        return vlm.model.generate(**prepared.kwargs, **gen)  # (1, prompt + new tokens)


def _whole_reply(vlm: VLM, prepared: PreparedInputs, gen: dict[str, Any], reply: ChatReply) -> Iterator[str]:
    out = _run(vlm, prepared, gen)
    reply._finish(out)
    yield vlm.tokenizer.decode(out[0, prepared.prompt_tokens:], skip_special_tokens=True)


def _streamed(vlm: VLM, prepared: PreparedInputs, gen: dict[str, Any], streamer, into: ChatReply) -> Iterator[str]:
    failure: list[BaseException] = []
    outputs: list[Any] = []

    def work():
        try:
            outputs.append(_run(vlm, prepared, {**gen, "streamer": streamer}))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, name="gridvlm-generate", daemon=True)
    thread.start()
    reply = ""
    for piece in streamer:
        if piece:
            reply += piece
            yield reply
    thread.join()
    if failure:
        raise ModelError(f"generation failed: {type(failure[0]).__name__}: {failure[0]}") from failure[0]
    into._finish(outputs[0])
    if not reply:
        yield reply
