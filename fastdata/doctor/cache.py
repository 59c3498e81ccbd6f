"""The cache directory: usable, big enough for the limit and the dataset, fast enough."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import Iterator
from typing import Any

from fastdata.doctor.report import FAIL, PASS, SKIP, WARN, Check, DoctorOptions
from fastdata.format.manifest import Manifest
from fastdata.loader import cache_fit
from fastdata.storage.remote import is_local
from fastdata.units import format_size

#: Filesystems a node cache should not live on: shared over the network (slow, and LMDB's
#: locks and rename atomicity are not dependable there).
NETWORK_FS = ("nfs", "nfs4", "lustre", "cifs", "smb3", "smbfs", "gpfs", "beegfs", "glusterfs", "ceph",
              "9p", "afs", "wekafs", "panfs", "fuse")


def _existing_parent(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding ``path`` (from /proc/self/mountinfo), or "unknown"."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = fields[4].replace("\\040", " ")
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, right.split()[0]
    return kind


def _cache_dir_check(root: str) -> Check:
    if os.path.lexists(root) and not os.path.isdir(root):
        return Check("cache-dir", FAIL, f"{root} exists and is not a directory")
    where = root if os.path.isdir(root) else _existing_parent(root)
    if not os.access(where, os.W_OK | os.X_OK):
        return Check("cache-dir", FAIL, f"{where} is not writable by uid {os.getuid()}")
    fs = filesystem_type(os.path.realpath(where))
    values = {"filesystem": fs}
    if not os.path.isdir(root):
        detail, status = f"{root} does not exist; it will be created (mode 0700) under {where}", PASS
    else:
        st = os.stat(root)
        mode, values["mode"] = stat.S_IMODE(st.st_mode), oct(stat.S_IMODE(st.st_mode))
        detail, status = f"{root} (mode {mode:o})", PASS
        if mode & stat.S_IWOTH and st.st_uid != os.getuid():
            return Check("cache-dir", FAIL, f"{root} is world-writable and owned by uid {st.st_uid}: the "
                         "node cache refuses it (others could replace shards); use a private directory")
        if mode & 0o077:
            detail, status = f"{detail}: other users have access to the cached shards; chmod 700 it", WARN
    if fs.split(".")[0] in NETWORK_FS:
        status = WARN
        detail = (f"{detail}; on a network filesystem ({fs}): use a local disk for the node cache "
                  "(locks and atomic renames are not dependable there, reads go over the network)")
    elif fs == "tmpfs":
        detail, status = f"{detail}; in RAM (tmpfs): cached shards take memory from training", WARN
    else:
        detail = f"{detail}; filesystem {fs}"
    return Check("cache-dir", status, detail, values)


def _disk_usage(root: str) -> int:
    total = 0
    for top, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
    return total


def _dataset_needs(options: DoctorOptions, manifest: Manifest, room: int, have: str) -> tuple[int, list[str]]:
    """The dataset's minimum cache_limit, and what is wrong with the given limit (or its absence)."""
    raw = manifest.shards.column("raw_bytes")
    largest, ranks = int(raw.max()), options.ranks_per_node
    minimum = cache_fit.minimum_limit(largest, ranks)  # the loader's own rule
    limit, problems = options.cache_limit, []
    if limit is not None and limit < minimum:
        problems.append(
            f"cache_limit {limit} bytes is below the minimum {minimum} bytes for this dataset ({ranks} "
            f"rank(s) x {cache_fit.CACHED_OPEN_SHARDS} open shards + 1 in flight, of up to {largest} bytes "
            "each); "
            f"use at least {minimum} bytes")
    in_place = is_local(str(options.url)) and manifest.compression is None  # read where it lies
    if options.batch_size is not None and not in_place:
        live = live_set(options, len(raw), largest)
        if limit is not None and limit < live:
            world = options.world_size or ranks
            partitions = options.partitions or options.batch_size * world
            window = cache_fit.fitting_window(limit, largest, ranks, len(raw), partitions,
                                              options.batch_size * world, options.batch_size)
            fits = f", or OrderOptions(window={window}) fits this limit" if window else ""
            problems.append(f"cache_limit {limit} bytes is below the live set of this job on this node, "
                            f"{live} bytes (each rank's working set of shards, pinned); shards would be "
                            f"fetched again and again: use at least {live} bytes{fits}")
    total = int(raw.sum())
    if limit is None and not in_place and room < total:
        problems.append(f"without --cache-limit every shard stays cached ({format_size(total)} raw), "
                        f"more than the {have}; set a cache_limit of at least {minimum} bytes")
    return minimum, problems


def live_set(options: DoctorOptions, shards: int, largest: int) -> int:
    """Bytes this node's ranks keep pinned at once for the job's order settings: the cache
    fit's advised limit (``loader/cache_fit.py``), the least that avoids fetching again."""
    ranks, micro = options.ranks_per_node, options.batch_size or 1
    global_batch = micro * (options.world_size or ranks)
    working = cache_fit.working_set(shards, options.partitions or global_batch, global_batch, micro,
                                    options.window, shuffle=True)
    return largest * (ranks * max(cache_fit.CACHED_OPEN_SHARDS, working) + 1)


def _cache_space(options: DoctorOptions, manifest: Manifest | None) -> Check:
    root, limit = options.cache_dir, options.cache_limit
    st = os.statvfs(_existing_parent(root))
    free, cached = st.f_bavail * st.f_frsize, _disk_usage(root) if os.path.isdir(root) else 0
    values: dict[str, Any] = {"free": free, "cached": cached, "limit": limit}
    have = f"{format_size(free)} free" + (f" + {format_size(cached)} already cached" if cached else "")
    problems: list[str] = []
    if manifest is not None and len(manifest.shards):
        values["minimum"], problems = _dataset_needs(options, manifest, free + cached, have)
        if options.batch_size is not None:
            raw = manifest.shards.column("raw_bytes")
            values["live_set"] = live_set(options, len(raw), int(raw.max()))
    if limit is not None and free + cached < limit:
        problems.append(f"cache_limit {format_size(limit)} ({limit} bytes) is more than the {have} on the "
                        f"filesystem: the cache would fill the disk; lower it to at most {free + cached} "
                        "bytes or free space")
    if problems:
        return Check("cache-space", FAIL, "; ".join(problems), values)
    shown = f"cache_limit {limit} bytes ({format_size(limit)})" if limit is not None else "no cache_limit"
    fits = f", the dataset needs at least {values['minimum']} bytes" if "minimum" in values else ""
    if "live_set" in values:
        fits += f" and this job's live set on this node is {values['live_set']} bytes"
    return Check("cache-space", PASS, f"{shown}{fits}; {have}", values)


@contextlib.contextmanager
def _scratch_file(root: str) -> Iterator[tuple[int, str]]:
    """A new private temp file in ``root``, removed afterwards with the directories made for it."""
    missing, parent = [], root
    while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
        missing.append(parent)
        parent = os.path.dirname(parent)
    created: list[str] = []
    path, fd = os.path.join(root, f".fastdata-doctor-{secrets.token_hex(6)}.tmp"), -1
    try:
        for directory in reversed(missing):
            os.mkdir(directory, 0o700)
            created.append(directory)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        yield fd, path
    finally:
        if fd >= 0:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for directory in reversed(created):  # innermost first; only what is still empty
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def _disk_throughput(options: DoctorOptions, free: int) -> list[Check]:
    """Write a temp file (fsync included), drop it from the page cache, read it back."""
    size = max(1 << 20, min(options.budget.disk_bytes, free // 4))
    block = os.urandom(min(4 << 20, size))
    deadline = time.monotonic() + options.budget.seconds
    with _scratch_file(options.cache_dir) as (fd, _):
        started, written = time.monotonic(), 0
        while written < size and time.monotonic() < deadline:
            written += os.write(fd, block[: size - written])
        os.fsync(fd)
        write_s = time.monotonic() - started
        with contextlib.suppress(OSError, AttributeError):  # not every filesystem honours it
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.lseek(fd, 0, os.SEEK_SET)
        started, read, deadline = time.monotonic(), 0, time.monotonic() + options.budget.seconds
        while time.monotonic() < deadline and (chunk := os.read(fd, 4 << 20)):
            read += len(chunk)
        read_s = time.monotonic() - started
    out = []
    for name, n, seconds in (("cache-write", written, write_s), ("cache-read", read, read_s)):
        rate = n / max(seconds, 1e-9)
        status = WARN if rate < options.thresholds.disk_bytes_per_s else PASS
        what = "written with fsync" if name == "cache-write" else "read back after dropping the page cache"
        out.append(Check(name, status, f"{format_size(rate)}/s: {format_size(n)} {what} in {seconds:.2f} s",
                         {"bytes_per_s": rate, "bytes": n, "seconds": seconds}))
    return out


def cache_checks(options: DoctorOptions, manifest: Manifest | None) -> list[Check]:
    """cache-dir, cache-space (against the limit and, given the ``manifest``, the loader's minimum),
    cache-write and cache-read. A missing cache dir is created for the measurement and removed."""
    where = _cache_dir_check(options.cache_dir)
    if where.status == FAIL:
        return [where, *(Check(n, SKIP, "cache dir unusable") for n in ("cache-space", "cache-write",
                                                                        "cache-read"))]
    checks = [where, _cache_space(options, manifest)]
    try:
        checks += _disk_throughput(options, int(checks[1].values["free"]))
    except OSError as e:
        reason = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        checks.append(Check("cache-write", FAIL,
                            f"writing a test file in {options.cache_dir} failed: {reason}"))
    return checks


