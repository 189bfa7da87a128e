"""The error a model id, a device choice or a prompt can cause. Importing it loads neither torch nor transformers."""

from ..errors import GridVLMError


class ModelError(GridVLMError):
    """A model that cannot be loaded or run as asked: unknown id, missing files, unsupported family, no GPU for
    quantization, a prompt longer than the model's context."""
