"""Import-only stand-in for torchvision (benchmarks/peers/torchvision_stub/README.md)."""

__version__ = "0.0.0+fastdatabenchstub"

from torchvision import datasets, transforms  # noqa: E402,F401
