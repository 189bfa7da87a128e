"""Load a LLaVA-NeXT or LLaVA-OneVision checkpoint once, with its processor and its geometry.

`load_vlm` returns a `VLM`: the model, processor and tokenizer, the family, the encoder geometry read from the
checkpoint, and whether the checkpoint says its weights are random. Loaded models are cached per
(id, device, dtype, quantization): every user of the app shares one copy.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..geometry import Plan
from .errors import ModelError
from .families import Family, Geometry, family_of, geometry_of, image_only_processor
from .tiny import RANDOM_WEIGHTS_KEY, RANDOM_WEIGHTS_LABEL

QUANTIZATIONS = ("4bit", "8bit")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(eq=False)
class VLM:
    """A loaded vision-language model and everything gridvlm needs to know about it."""

    model_id: str  # hub id or local directory, as given
    family: Family
    model: Any  # LlavaNextForConditionalGeneration / LlavaOnevisionForConditionalGeneration, eval mode
    processor: Any  # the checkpoint's processor (PIL image backend): the reference path
    tokenizer: Any
    geometry: Geometry
    device: str  # "cpu", "cuda", "cuda:1" …
    dtype: Any  # torch.dtype of the weights
    quantization: str | None = None
    random_weights: bool = False  # the checkpoint says its weights are random (make_tiny_vlm)

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
        from .. import plan

        return plan(image_or_size, self.family.name, **self.geometry.plan_params())

    def is_native(self, p: Plan) -> bool:
        """True when `p` is exactly the plan the model's own processor would make."""
        return p.strategy == self.family.name and p == self.native_plan(p.image_size)

    def encode(self, image: Any, plan: Plan | dict | str = "native"):
        """The visual token sequence of `image` cut as `plan` (see `gridvlm.models.encode`)."""
        from .visual import encode

        return encode(self, image, plan)


_CACHE: dict[tuple, VLM] = {}
_CACHE_LOCK = threading.Lock()


def load_vlm(model_id_or_path: str | os.PathLike, device: str = "auto", dtype: Any = "auto",
             quantization: str | None = None, trust_remote_code: bool = False) -> VLM:
    """Load (or return the cached) model, processor and geometry of a LLaVA-NeXT / LLaVA-OneVision checkpoint.

    device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N".
    dtype: "auto" (bfloat16 on CUDA, float32 on CPU), "float32", "bfloat16", "float16" or a torch.dtype.
    quantization: None, "4bit" or "8bit" (bitsandbytes, CUDA only).
    Raises ModelError when the id is unknown, files are missing, the family is not supported, or the
    device cannot do what was asked.
    """
    import torch

    source = str(model_id_or_path)
    device = _resolve_device(device, torch)
    dtype = _resolve_dtype(dtype, device, torch)
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ModelError(f"quantization must be one of {QUANTIZATIONS} or None, not {quantization!r}")
    if quantization is not None and not device.startswith("cuda"):
        raise ModelError(f"{quantization} quantization runs through bitsandbytes on a CUDA GPU; the device here is "
                         f"{device!r}. Load without quantization (float32 on CPU) or use a machine with a GPU.")
    key = (source, device, str(dtype), quantization, trust_remote_code)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(source, device, dtype, quantization, trust_remote_code, torch)
        return _CACHE[key]


def loaded_models() -> list[VLM]:
    """Every model loaded so far (without loading anything)."""
    with _CACHE_LOCK:
        return list(_CACHE.values())


def clear_cache() -> None:
    """Forget every loaded model (their memory is freed once nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


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


def _load(source: str, device: str, dtype: Any, quantization: str | None, trust_remote_code: bool, torch) -> VLM:
    import transformers

    if _looks_like_path(source) and not os.path.isdir(os.path.expanduser(source)):
        raise ModelError(f"no model directory at {source!r}; give a local checkpoint directory or a hub id such as "
                         f"'llava-hf/llava-v1.6-mistral-7b-hf'")
    source = os.path.expanduser(source)
    common = {"trust_remote_code": trust_remote_code}
    try:
        config = transformers.AutoConfig.from_pretrained(source, **common)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(_missing_message(source, exc)) from None
    family = family_of(config, source)

    try:
        processor = transformers.AutoProcessor.from_pretrained(source, backend="pil", **common)
    except (OSError, ValueError, ImportError, AttributeError, TypeError):
        # OneVision's processor also loads a video processor, which needs torchvision; gridvlm needs only images.
        try:
            processor = image_only_processor(source, family, **common)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{source!r} has a {family.name} model but its processor files could not be read: "
                             f"{_first_line(exc)}") from None

    load_kwargs: dict[str, Any] = {"dtype": dtype, **common}
    if quantization is not None:
        load_kwargs.update(quantization_config=_bitsandbytes(quantization, dtype), device_map={"": device})
    try:
        model = getattr(transformers, family.model_class).from_pretrained(source, **load_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the weights of {source!r}: {_first_line(exc)}") from None
    if quantization is None:
        model = model.to(device)
    model.eval()
    geometry = geometry_of(config, family, processor.image_processor)
    return VLM(
        model_id=source,
        family=family,
        model=model,
        processor=processor,
        tokenizer=processor.tokenizer,
        geometry=geometry,
        device=device,
        dtype=dtype,
        quantization=quantization,
        random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
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


def _missing_message(source: str, exc: BaseException) -> str:
    if os.path.isdir(source):
        return f"{source!r} is a directory but not a transformers checkpoint (no readable config.json)"
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "in the local Hugging Face cache (offline mode is on)" if offline else "on the Hugging Face hub"
    return (f"no model {source!r}: it is not a local directory and could not be found {where}. "
            f"Try 'llava-hf/llava-v1.6-mistral-7b-hf' or a directory made by make_tiny_vlm. ({_first_line(exc)})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
