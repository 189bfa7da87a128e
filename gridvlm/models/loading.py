"""Load a checkpoint of any family gridvlm.models runs once, with its processor, its adapter and its geometry.

`load_vlm` returns a `VLM`: the model, processor and tokenizer, the family's adapter, the encoder geometry read
from the checkpoint, and whether the checkpoint says its weights are random. Loaded models are cached per
`ModelKey` (source, device, dtype, quantization): every user of the app shares one copy.

The cache never makes a reader wait: finished loads sit in a dict that is replaced, never changed in place, so
`loaded_models` and `is_loaded` read it without a lock. Loading takes a lock per key only: a second caller of
the same key waits for the first one's result; callers of other keys, and status reads, do not wait at all.
Local paths are resolved, so `dir`, `dir/` and `./dir` are one model.

The cache holds at most `gridvlm.limits.active().max_models` models: when a load would exceed it, the least
recently used model leaves, but never one that a running reply holds (`in_use`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..geometry import Plan
from .adapter import ModelAdapter, adapter_for_config
from .errors import ModelError
from .tiny import RANDOM_WEIGHTS_KEY, RANDOM_WEIGHTS_LABEL

QUANTIZATIONS = ("4bit", "8bit")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model: plain values, so a chat record can keep it and load the model again."""

    source: str  # hub id, or the resolved path of a local directory
    device: str  # "cpu", "cuda", "cuda:1" …
    dtype: str  # "float32", "bfloat16", "float16"
    quantization: str | None = None
    trust_remote_code: bool = False

    def load(self) -> VLM:
        """The loaded model (from the cache when it is there)."""
        return load_vlm(self.source, self.device, self.dtype, self.quantization, self.trust_remote_code)


@dataclass(eq=False)
class VLM:
    """A loaded vision-language model and everything gridvlm needs to know about it."""

    model_id: str  # hub id, or the resolved path of a local directory
    family: ModelAdapter  # what gridvlm knows about the model's family
    model: Any  # the family's transformers model with a language-modelling head, eval mode
    processor: Any  # the checkpoint's processor (PIL image backend): the reference path
    tokenizer: Any
    geometry: Any  # the family's encoder geometry, read from the checkpoint (family.processor_geometry)
    device: str  # "cpu", "cuda", "cuda:1" …
    dtype: Any  # torch.dtype of the weights
    quantization: str | None = None
    random_weights: bool = False  # the checkpoint says its weights are random (make_tiny_vlm)
    trust_remote_code: bool = field(default=False, repr=False)

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.model_id, self.device, str(self.dtype).removeprefix("torch."), self.quantization,
                        self.trust_remote_code)

    @property
    def context_length(self) -> int:
        """Positions the language model can attend over: text_config.max_position_embeddings."""
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def label(self) -> str:
        """How the UI names this model: its id, and a warning when the weights are random."""
        name = Path(self.model_id).name if os.path.isdir(self.model_id) else self.model_id
        return f"{name} ({RANDOM_WEIGHTS_LABEL})" if self.random_weights else name

    def native_plan(self, image_or_size: Any) -> Plan:
        """The gridvlm plan of the model's own processing of this image, parameters read from the checkpoint."""
        return self.family.native_plan(self.geometry, image_or_size)

    def is_native(self, p: Plan) -> bool:
        """True when `p` is exactly the plan the model's own processor would make."""
        return p.strategy == self.family.name and p == self.native_plan(p.image_size)

    def encode(self, image: Any, plan: Plan | str = "native"):
        """The visual token sequence of `image` cut as `plan` (see `gridvlm.models.encode`)."""
        from .visual import encode

        return encode(self, image, plan)


class _Pending:
    """A load in progress: the first caller of a key loads, later callers wait on `done` for its outcome."""

    def __init__(self):
        self.done = threading.Event()
        self.vlm: VLM | None = None
        self.error: BaseException | None = None


_LOADED: dict[ModelKey, VLM] = {}  # replaced on every change (copy on write): read without a lock
_PENDING: dict[ModelKey, _Pending] = {}
_LOCK = threading.Lock()  # guards _PENDING and the replacement of _LOADED; never held during a load
_USED: dict[ModelKey, int] = {}  # key -> tick of its last use (written without a lock: one int per key)
_TICK = itertools.count()
_HELD: dict[ModelKey, int] = {}  # key -> running replies holding it (guarded by _LOCK)


def load_vlm(model_id_or_path: str | os.PathLike, device: str = "auto", dtype: Any = "auto",
             quantization: str | None = None, trust_remote_code: bool = False) -> VLM:
    """Load (or return the cached) model, processor and geometry of a checkpoint of a family gridvlm.models runs.

    device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N".
    dtype: "auto" (bfloat16 on CUDA, float32 on CPU), "float32", "bfloat16", "float16" or a torch.dtype.
    quantization: None, "4bit" or "8bit" (bitsandbytes, CUDA only).
    Raises ModelError when the id is unknown, files are missing, the family is not supported, or the
    device cannot do what was asked.
    """
    import torch

    given = str(model_id_or_path)
    device = _resolve_device(device, torch)
    dtype = _resolve_dtype(dtype, device, torch)
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ModelError(f"quantization must be one of {QUANTIZATIONS} or None, not {quantization!r}")
    if quantization is not None and not device.startswith("cuda"):
        raise ModelError(f"{quantization} quantization runs through bitsandbytes on a CUDA GPU; the device here is "
                         f"{device!r}. Load without quantization (float32 on CPU) or use a machine with a GPU.")
    key = ModelKey(normalise_source(given), device, str(dtype).removeprefix("torch."), quantization,
                   bool(trust_remote_code))
    vlm = _LOADED.get(key)
    if vlm is not None:
        _USED[key] = next(_TICK)
        return vlm
    with _LOCK:
        vlm = _LOADED.get(key)
        if vlm is not None:
            return vlm
        pending = _PENDING.get(key)
        loads = pending is None
        if loads:
            pending = _PENDING[key] = _Pending()
    if not loads:
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.vlm
    try:
        pending.vlm = _load(key, given, dtype, torch)
    except BaseException as exc:
        pending.error = exc
        raise
    finally:
        _finish(key, pending)
    return pending.vlm


def _finish(key: ModelKey, pending: _Pending) -> None:
    global _LOADED
    with _LOCK:
        if pending.vlm is not None:
            _LOADED = {**_LOADED, key: pending.vlm}
            _USED[key] = next(_TICK)
            _evict(keep=key)
        _PENDING.pop(key, None)
    pending.done.set()


def _evict(keep: ModelKey | None = None) -> None:
    """Drop least recently used models beyond the limit, sparing `keep` and models in use. Call with _LOCK held."""
    global _LOADED
    from ..limits import active

    spare = [k for k in sorted(_LOADED, key=lambda k: _USED.get(k, -1))
             if k != keep and not _HELD.get(k)]
    extra = len(_LOADED) - active().max_models
    gone = spare[:max(0, extra)]
    if gone:
        _LOADED = {k: v for k, v in _LOADED.items() if k not in gone}
        for k in gone:
            _USED.pop(k, None)


@contextlib.contextmanager
def in_use(vlm: VLM) -> Iterator[VLM]:
    """Hold `vlm` in the cache while a reply runs: eviction passes it by until the block ends."""
    key = vlm.key
    with _LOCK:
        _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield vlm
    finally:
        with _LOCK:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
            _evict()


def normalise_source(source: str | os.PathLike) -> str:
    """A hub id as given (stripped); a local directory (or anything written as a path) as its resolved path."""
    source = os.path.expanduser(str(source).strip())
    if _looks_like_path(source) or os.path.isdir(source):
        return str(Path(source).resolve())
    return source


def loaded_models() -> list[VLM]:
    """Every model loaded so far (without loading anything, without waiting for a load in progress)."""
    return list(_LOADED.values())


def is_loaded(model_id_or_path: str | os.PathLike, quantization: str | None = None) -> bool:
    """Whether this model is loaded (on any device and dtype), without loading or waiting for anything."""
    source = normalise_source(model_id_or_path)
    return any(key.source == source and key.quantization == quantization for key in _LOADED)


def clear_cache() -> None:
    """Forget every loaded model (their memory is freed once nothing else holds them)."""
    global _LOADED
    with _LOCK:
        _LOADED = {}
        _USED.clear()


def _resolve_device(device: str, torch) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for but this machine has no CUDA GPU; use device='cpu'")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ModelError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {device!r}")
    return device


def _resolve_dtype(dtype: Any, device: str, torch):
    if dtype in (None, "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise ModelError(f"dtype must be 'auto' or one of {DTYPES}, not {dtype!r}")
    return getattr(torch, str(dtype))


def _looks_like_path(source: str) -> bool:
    """Hub ids are 'name' or 'owner/name'; anything else is meant as a directory."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def _load(key: ModelKey, given: str, dtype: Any, torch) -> VLM:
    import transformers

    source = key.source
    if _looks_like_path(os.path.expanduser(given)) and not os.path.isdir(source):
        raise ModelError(f"no model directory at {given!r}; give a local checkpoint directory or a hub id such as "
                         f"'llava-hf/llava-v1.6-mistral-7b-hf'")
    common = {"trust_remote_code": key.trust_remote_code}
    try:
        config = transformers.AutoConfig.from_pretrained(source, **common)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(_missing_message(source, given, exc)) from None
    family = adapter_for_config(config, given)
    try:
        processor = family.load_processor(source, **common)
    except ModelError:  # the family refused the checkpoint itself, with its own message
        raise
    except (OSError, ValueError, ImportError, AttributeError, TypeError) as exc:
        raise ModelError(f"{given!r} has a {family.name} model but its processor files could not be read: "
                         f"{_first_line(exc)}") from None

    load_kwargs: dict[str, Any] = {"dtype": dtype, **common}
    if key.quantization is not None:
        load_kwargs.update(quantization_config=_bitsandbytes(key.quantization, dtype), device_map={"": key.device})
    try:
        model = getattr(transformers, family.model_class).from_pretrained(source, **load_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the weights of {given!r}: {_first_line(exc)}") from None
    if key.quantization is None:
        model = model.to(key.device)
    model.eval()
    return VLM(
        model_id=source,
        family=family,
        model=model,
        processor=processor,
        tokenizer=processor.tokenizer,
        geometry=family.processor_geometry(config, processor),
        device=key.device,
        dtype=dtype,
        quantization=key.quantization,
        random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
        trust_remote_code=key.trust_remote_code,
    )


def _bitsandbytes(quantization: str, dtype: Any) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(f"{quantization} quantization needs the bitsandbytes package: pip install bitsandbytes") \
            from None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")
    return BitsAndBytesConfig(load_in_8bit=True)


def _missing_message(source: str, given: str, exc: BaseException) -> str:
    if os.path.isdir(source):
        return f"{given!r} is a directory but not a transformers checkpoint (no readable config.json)"
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "in the local Hugging Face cache (offline mode is on)" if offline else "on the Hugging Face hub"
    return (f"no model {given!r}: it is not a local directory and could not be found {where}. "
            f"Try 'llava-hf/llava-v1.6-mistral-7b-hf' or a directory made by make_tiny_vlm. ({_first_line(exc)})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
