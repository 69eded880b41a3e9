"""SIFA model families; importing this package registers every variant with timm."""

from . import sifa_resnet, sifa_swin  # noqa: F401
