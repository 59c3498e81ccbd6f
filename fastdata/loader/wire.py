"""How a batch made in a DataLoader worker process reaches the training process.

The stock ``torch.utils.data.DataLoader`` pickles what a worker yields. A tensor pickles as a
shared-memory segment whose file descriptor is passed over a socket, one connection to the
worker per segment: with three tensors per batch (``input_ids``, ``labels``, ``sample_ids``)
that costs more than reading the batch, and it caps the loader at about a thousand batches a
second here. So what :class:`TokenDataset` yields inside a worker is a :class:`WireBatch`: a
``dict`` holding the same tensors (code running in the worker sees an ordinary dict), which
pickles as one byte string through the loader's pipe instead:

* every integer array in the narrowest integer dtype that holds all of its values
  (``uint16`` for the tokens of a ``uint16`` dataset, ``int16`` for labels with ``-100``);
* ``labels`` sent not at all when they are ``input_ids`` shifted by one token (packed
  samples without a loss mask): the ``(B, L + 1)`` token window is sent once.

Both checks read the values being sent, so nothing is assumed about where they came from.
When the loader collates such items (per-sample items, ``DataLoader(ds, batch_size=B)``),
``default_collate`` stacks them with :func:`collate`, registered for this type through
torch's documented ``default_collate_fn_map``: into ordinary memory (``default_collate``
would give every key a fresh shared-memory segment in a worker, about as slow as sending
it) and into another ``WireBatch``.
The training process rebuilds a plain ``dict`` of contiguous tensors with the original
keys, dtypes, shapes and values. A value the format does not cover (not a CPU tensor of a
numpy dtype, or one needing grad) makes the whole batch go the stock way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data._utils import collate as _collate

#: Integer dtypes a value may travel in, narrowest first, with their ranges.
_NARROW = [(np.dtype(t), int(np.iinfo(t).min), int(np.iinfo(t).max))
           for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32")]
_TORCH = {torch.bool: np.bool_, torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16,
          torch.int32: np.int32, torch.int64: np.int64, torch.float16: np.float16,
          torch.float32: np.float32, torch.float64: np.float64}
_FROM_NUMPY = {np.dtype(v): k for k, v in _TORCH.items()}

#: One value of the batch: (key, dtype, shape, dtype on the wire, byte count, role); role
#: WINDOW: ``input_ids`` sent with the labels' last token appended, SHIFTED: ``labels``, sent
#: as that window's last ``L`` tokens (no bytes of its own).
Entry = tuple[str, str, tuple[int, ...], str, int, str]
WINDOW, SHIFTED = "window", "shifted"


class WireBatch(dict):
    """A batch (or sample) of tensors that pickles compactly; see the module docstring."""

    def __copy__(self) -> WireBatch:  # default_collate / default_convert clone the first item
        return WireBatch(self)

    def __reduce__(self) -> tuple[Any, ...]:
        packed = encode(self)
        if packed is None:
            return (dict, (dict(self),))
        return (decode, packed)


def collate(batch: list[dict[str, Any]], *, collate_fn_map: dict | None = None) -> WireBatch:
    """``default_collate`` of :class:`WireBatch` items: each key's tensors stacked (a key
    holding anything else collates the default way), as a :class:`WireBatch`."""
    out = WireBatch()
    for key in batch[0]:
        values = [item[key] for item in batch]
        if all(isinstance(v, torch.Tensor) for v in values):
            out[key] = torch.stack(values, 0)
        else:
            out[key] = _collate.collate(values, collate_fn_map=collate_fn_map)
    return out


_collate.default_collate_fn_map[WireBatch] = collate


def _narrow_dtype(lo: int, hi: int, dtype: np.dtype) -> np.dtype:
    for d, least, most in _NARROW:
        if d.itemsize >= dtype.itemsize:
            break
        if least <= lo and hi <= most:
            return d
    return dtype


def _as_numpy(value: Any) -> np.ndarray | None:
    if not isinstance(value, torch.Tensor) or value.device.type != "cpu" or value.requires_grad:
        return None
    if value.dtype not in _TORCH:
        return None
    return value.numpy()


def _shifted(arrays: dict[str, np.ndarray]) -> bool:
    """Whether ``labels`` are ``input_ids`` shifted by one token, row by row."""
    x, y = arrays.get("input_ids"), arrays.get("labels")
    if x is None or y is None or x.shape != y.shape or x.dtype != y.dtype or x.ndim == 0:
        return False
    width = x.shape[-1]
    if x.dtype.kind not in "iu" or width == 0 or x.size == 0:
        return False
    # one contiguous comparison of the flattened arrays; the positions where a row's last
    # label meets the next row's first input do not count
    differ = np.ravel(x)[1:] != np.ravel(y)[:-1]
    differ[width - 1 :: width] = False
    return not differ.any()


def encode(batch: dict[str, Any]) -> tuple[tuple[Entry, ...], bytes] | None:
    """(entries, payload) of ``batch``, or None when some value is not covered."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in batch.items():
        array = _as_numpy(value)
        if array is None or not isinstance(key, str):
            return None
        arrays[key] = array
    entries: list[Entry] = []
    parts: list[bytes] = []
    shifted = _shifted(arrays)
    for key, a in arrays.items():
        if shifted and key == "labels":
            entries.append((key, a.dtype.str, a.shape, a.dtype.str, 0, SHIFTED))
            continue
        if shifted and key == "input_ids":  # the window: inputs and the labels' last column
            last = arrays["labels"][..., -1:]
            wire = _narrow_dtype(min(int(a.min()), int(last.min())), max(int(a.max()), int(last.max())),
                                 a.dtype)
            window = np.empty((*a.shape[:-1], a.shape[-1] + 1), dtype=wire)
            window[..., :-1], window[..., -1:] = a, last
            data, role = window.tobytes(), WINDOW
        else:
            wire = a.dtype
            if a.dtype.kind in "iu" and a.size:
                wire = _narrow_dtype(int(a.min()), int(a.max()), a.dtype)
            data, role = (a.astype(wire) if wire != a.dtype else a).tobytes(), ""
        entries.append((key, a.dtype.str, a.shape, wire.str, len(data), role))
        parts.append(data)
    return tuple(entries), b"".join(parts)


def decode(entries: tuple[Entry, ...], payload: bytes) -> dict[str, torch.Tensor]:
    """The batch :func:`encode` described, as a plain dict of new contiguous tensors
    (``input_ids`` and shifted ``labels``: the two halves of one storage)."""
    out: dict[str, torch.Tensor] = {}
    window: np.ndarray | None = None
    offset = 0
    for key, dtype, shape, wire, nbytes, role in entries:
        if role == SHIFTED:
            continue
        w = np.dtype(wire)
        src = np.frombuffer(payload, dtype=w, count=nbytes // w.itemsize, offset=offset).reshape(
            (*shape[:-1], shape[-1] + 1) if role == WINDOW else shape)
        offset += nbytes
        torch_dtype = _FROM_NUMPY[np.dtype(dtype)]
        if role == WINDOW:
            window = src
            pair = torch.empty((2, *shape), dtype=torch_dtype)
            pair.numpy()[0] = src[..., :-1]
            out[key], out["labels"] = pair[0], pair[1]
        else:
            out[key] = torch.empty(shape, dtype=torch_dtype)
            out[key].numpy()[...] = src
    if window is not None:
        out["labels"].numpy()[...] = window[..., 1:]
    return {e[0]: out[e[0]] for e in entries}


__all__ = ["WireBatch", "collate", "decode", "encode"]
