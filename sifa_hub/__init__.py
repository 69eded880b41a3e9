"""sifa_hub: SIFA video backbones (Long et al., CVPR 2022, arXiv 2206.06931) for timm, torch.hub and transformers.

Importing the package registers every model with timm's registry. When transformers is installed it also
registers ``model_type="sifa"`` with transformers' Auto* classes (``import sifa_hub.hf`` does so explicitly);
without transformers (a torch + timm environment, as torch.hub users often have) the timm models still work.
Nothing here imports a video decoder: PyAV is imported when a video is first decoded.
"""

from __future__ import annotations

import importlib.util
import warnings

__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (registers the timm models)
from .layers import SIFA  # noqa: E402
from .ops import sifa_attention  # noqa: E402

__all__ = ["SIFA", "__version__", "sifa_attention"]


def _transformers_available() -> bool:
    """Whether ``import transformers`` can be attempted (an import blocker counts as absent)."""
    try:
        return importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):
        return False


def _register_transformers() -> None:
    """Import :mod:`sifa_hub.hf` (registering the Auto* classes) if transformers is installed.

    A transformers that is installed but cannot host the integration (e.g. an older major version) leaves the
    timm models working and says why once; ``import sifa_hub.hf`` raises the underlying error.
    """
    if not _transformers_available():
        return
    try:
        importlib.import_module(".hf", __name__)
    except ImportError as e:
        warnings.warn(
            f"sifa_hub: transformers integration not registered ({type(e).__name__}: {e}); the timm models work, "
            "`import sifa_hub.hf` shows the full error",
            stacklevel=2,
        )


_register_transformers()
