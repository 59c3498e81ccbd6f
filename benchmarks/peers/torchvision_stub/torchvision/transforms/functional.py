"""Stub of torchvision.transforms.functional."""


def to_tensor(pic):
    raise RuntimeError("torchvision is a stub in this venv: to_tensor is unavailable")
