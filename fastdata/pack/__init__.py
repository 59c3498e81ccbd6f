"""Packing corpora into fastdata datasets; calling this package packs.

``fastdata.pack(inputs, output, **options)`` runs :func:`fastdata.pack.api.pack` (see
there, and docs/pack.md). A package cannot be a function, and ``import
fastdata.pack.pipeline`` makes the package the ``fastdata.pack`` attribute, so the package
itself is callable; its modules stay importable as ``fastdata.pack.pipeline`` and so on.
Nothing heavy is imported until a pack runs.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from fastdata.pack.api import pack

        return pack(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        from fastdata.pack.api import pack

        return inspect.signature(pack)


def __getattr__(name: str) -> Any:
    if name == "pack":  # ``fastdata.pack`` reached through the root package's lazy table
        return sys.modules[__name__]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _CallablePackage
