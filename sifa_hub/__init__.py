"""sifa_hub: SIFA video backbones (Long et al., CVPR 2022, arXiv 2206.06931) for timm, torch.hub and transformers.

Importing the package registers every model with timm's registry and with transformers' Auto* classes.
"""

__version__ = "0.1.0"

from . import (
    hf,  # noqa: E402,F401  (registers the transformers Auto* classes)
    models,  # noqa: E402,F401  (registers the timm models)
)
from .layers import SIFA  # noqa: E402
from .ops import sifa_attention  # noqa: E402

__all__ = ["SIFA", "__version__", "sifa_attention"]
