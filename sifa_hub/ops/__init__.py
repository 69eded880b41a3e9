"""The SIFA operator: functional API, reference implementation and fast backends."""

from .functional import (
    BACKENDS,
    NORMALIZE_MODES,
    available_backends,
    build_kernels,
    selected_backend,
    sifa_attention,
    sifa_attention_channels_last,
    validate_sifa_inputs,
)
from .reference import sifa_attention_reference

__all__ = [
    "BACKENDS",
    "NORMALIZE_MODES",
    "available_backends",
    "build_kernels",
    "selected_backend",
    "sifa_attention",
    "sifa_attention_channels_last",
    "sifa_attention_reference",
    "validate_sifa_inputs",
]
