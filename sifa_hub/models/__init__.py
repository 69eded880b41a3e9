"""SIFA model families; importing this package registers every variant with timm."""
