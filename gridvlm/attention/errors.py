"""The error attention capture and mapping raise. Importing it loads neither torch nor numpy."""

from ..errors import GridVLMError


class AttentionError(GridVLMError):
    """Attention cannot be captured or mapped as asked: unknown layers or heads, positions outside the sequence,
    a vector or layout that belongs to another image."""
