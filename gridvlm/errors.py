"""The errors a user of gridvlm can cause. Every message names the input and what would work."""


class GridVLMError(ValueError):
    """Base class of every error that bad input to gridvlm raises."""


class PlanError(GridVLMError):
    """A size, strategy name or parameter that no plan can be made for."""


class ImageError(GridVLMError):
    """Bytes or a file that are not a readable, safe-to-decode image."""
