"""``fastdata.pack(...)``: the pack from Python, with the CLI's options as keywords.

The keywords are the ``fastdata pack`` flags (``--text-field`` is ``text_field=``, ``--no-eos``
is ``no_eos=True``, ``--storage-option K=V`` is ``storage_options={K: V}``), and both build
their :class:`~fastdata.pack.pipeline.PackConfig` with :func:`build_config`, so a pack
from Python and the same pack from the CLI write the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from fastdata.errors import FastdataConfigError
from fastdata.pack import pipeline
from fastdata.pack.config import parse_block_size
from fastdata.pack.encode import EncodeOptions
from fastdata.pack.pipeline import PackConfig, PackProgress, PackResult
from fastdata.pack.records import RecordSource, source_name
from fastdata.pack.sources import ReadOptions
from fastdata.pack.tokenizers import TokenizerSpec
from fastdata.units import parse_size

if TYPE_CHECKING:
    from typing_extensions import Unpack


class PackOptions(TypedDict, total=False):
    """The keywords of :func:`pack`: ``fastdata pack``'s flags (docs/pack.md), same defaults."""

    tokenizer: str  #: bytes (default) | PATH/tokenizer.json | tiktoken:NAME | none
    text_field: str
    text_mode: str  #: file | line
    chat: bool
    messages_field: str
    pretokenized: bool
    vocab_size: int | None
    eos_id: int | None
    bos_id: int | None
    eos_token: str | None
    bos_token: str | None
    no_eos: bool
    bos: bool
    wds_member: str | None
    workers: int  #: default: all cores
    shard_size: int | str  #: bytes, or "256MB"
    block_size: int | str | None  #: format v1.1 block size, "1MiB" (default); None / "none": v1
    compression: str | None  #: None / "none" or "zstd"
    dtype: str  #: auto | uint16 | uint32
    on_error: str  #: raise | skip
    overwrite: bool
    storage_options: Mapping[str, Any]
    engine: str  #: local | ray
    ray_address: str | None


DEFAULTS: dict[str, Any] = {
    "tokenizer": "bytes", "text_field": "text", "text_mode": "file", "chat": False,
    "messages_field": "messages", "pretokenized": False, "vocab_size": None, "eos_id": None,
    "bos_id": None, "eos_token": None, "bos_token": None, "no_eos": False, "bos": False,
    "wds_member": None, "workers": None, "shard_size": "256MB", "block_size": "1MiB", "compression": None,
    "dtype": "auto", "on_error": "raise", "overwrite": False, "storage_options": None,
    "engine": "local", "ray_address": None,
}
_RUN = ("engine", "ray_address")  # how to run, not what: allowed beside a PackConfig


def _checked(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise FastdataConfigError(f"unknown pack option {unknown[0]!r}; the options are "
                                  f"{', '.join(DEFAULTS)} (docs/pack.md)")
    return {**DEFAULTS, **options}


def build_config(inputs: Iterable[str | os.PathLike[str]], output: str | os.PathLike[str],
                 options: Mapping[str, Any]) -> PackConfig:
    """The PackConfig of a pack of ``inputs`` into ``output`` with ``options`` (PackOptions).

    Raises:
        FastdataConfigError: an unknown option or a bad value.
    """
    o = _checked(options)
    if o["on_error"] not in ("raise", "skip"):
        raise FastdataConfigError(f"on_error must be raise or skip, got {o['on_error']!r}")
    if o["text_mode"] not in ("file", "line"):
        raise FastdataConfigError(f"text_mode must be file or line, got {o['text_mode']!r}")
    read = ReadOptions(text_field=o["text_field"], text_mode=o["text_mode"], chat=o["chat"],
                       messages_field=o["messages_field"], pretokenized=o["pretokenized"],
                       wds_member=o["wds_member"])
    spec = TokenizerSpec(str(o["tokenizer"]), eos_token=o["eos_token"], bos_token=o["bos_token"],
                         vocab_size=o["vocab_size"], eos_id=o["eos_id"], bos_id=o["bos_id"])
    encode = EncodeOptions(read, spec, add_eos=not o["no_eos"], add_bos=o["bos"],
                           skip_bad=o["on_error"] == "skip")
    compression = None if o["compression"] in (None, "none") else o["compression"]
    return PackConfig(
        inputs=tuple(os.fspath(i) for i in inputs), output=os.fspath(output), encode=encode,
        workers=o["workers"] or os.cpu_count() or 1, shard_size=parse_size(o["shard_size"]),
        compression=compression, dtype=o["dtype"], overwrite=o["overwrite"],
        storage_options=dict(o["storage_options"] or {}), block_size=parse_block_size(o["block_size"]),
    )


def _is_paths(inputs: Any) -> bool:
    if isinstance(inputs, (str, os.PathLike)):
        return True
    return isinstance(inputs, (list, tuple)) and all(  # an empty list: "no input files found"
        isinstance(i, (str, os.PathLike)) for i in inputs)


def pack(inputs: Any, output: str | os.PathLike[str] | None = None, *,
         progress: Callable[[PackProgress], None] | None = None,
         **options: Unpack[PackOptions]) -> PackResult:
    """Pack a corpus into a fastdata dataset at ``output``: what ``fastdata pack`` does.

    Args:
        inputs: a path or URL (``az://``, ``s3://``, ``gs://``, ``https://``, ...), a list of
            them (files, directories, globs, ``save_to_disk`` directories), a
            ``datasets.Dataset`` / ``datasets.IterableDataset`` or any iterable of dicts; or
            a :class:`~fastdata.pack.pipeline.PackConfig` (then no ``output`` and no options
            but ``engine`` / ``ray_address``).
        output: a directory or fsspec URL.
        progress: called with the running totals after every input task.
        **options: the CLI's flags as keywords (:class:`PackOptions`), e.g.
            ``tokenizer="tok/tokenizer.json", shard_size="64MB", compression="zstd"``.

    Returns:
        The result: ``docs``, ``tokens``, ``shards``, ``bytes``, ``skipped`` (by reason),
        ``fingerprint``, the ``manifest`` and this run's ``progress``.

    Raises:
        FastdataConfigError: bad options, or ``output`` holds another dataset or pack.
        FastdataInputError: a bad record under ``on_error="raise"``, or a missing input.
        FastdataIOError: an input cannot be read or the output written.
    """
    records = None
    if isinstance(inputs, PackConfig):
        if output is not None or set(options) - set(_RUN):
            raise FastdataConfigError("pass either a PackConfig or inputs, output and options, not both")
        config = inputs
    else:
        if output is None:
            raise FastdataConfigError("fastdata.pack needs an output directory or URL")
        if _is_paths(inputs):
            paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
            config = build_config(paths, output, options)
        else:
            if not hasattr(inputs, "__iter__"):
                raise FastdataConfigError(f"cannot pack a {type(inputs).__name__}: pass paths, URLs, "
                                          "a datasets.Dataset or an iterable of dicts")
            records = RecordSource(inputs, source_name(inputs))
            config = build_config((), output, options)
    engine, address = options.get("engine", "local"), options.get("ray_address")
    if engine == "ray":
        if records is not None:
            raise FastdataConfigError("engine='ray' packs files and URLs; a Python iterable is packed "
                                      "with the local engine")
        from fastdata.pack.ray_engine import RayOptions, pack_on_ray

        return pack_on_ray(config, RayOptions(address=address), progress=progress)
    if engine != "local":
        raise FastdataConfigError(f"engine must be local or ray, got {engine!r}")
    return pipeline.pack(config, progress=progress, records=records)
