"""Stub package (see benchmarks/peers/torchvision_stub/README.md)."""

from torchvision.transforms import functional  # noqa: F401
