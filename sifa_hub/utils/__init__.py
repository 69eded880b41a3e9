"""Small services shared by every application module (atomic files, devices and autocast, FLOPs)."""
