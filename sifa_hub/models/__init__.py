"""SIFA model families; importing this package registers every variant with timm."""

from . import sifa_resnet  # noqa: F401
from . import sifa_swin  # noqa: F401
