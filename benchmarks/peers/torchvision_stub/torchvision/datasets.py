"""The one torchvision.datasets name mosaicml-streaming subclasses at import time."""

from torch.utils.data import Dataset


class VisionDataset(Dataset):
    def __init__(self, root=None, transforms=None, transform=None, target_transform=None):
        raise RuntimeError("torchvision is a stub in this venv: vision datasets are unavailable")
