"""Fetching one remote object to a local file: ranged, parallel, retried, verified.

Transient faults (connection resets, timeouts, truncated bodies, 5xx, 503 with
Retry-After) are retried with bounded, jittered exponential backoff (:func:`backoff`, the one
rule for both retry loops: whole objects in :func:`download`, small reads in :func:`retrying`);
400/401/403/404 fail at once.
Large objects come down as parallel ranged reads written in place. The result is checked
against the expected size and xxh3-128 before the caller publishes it. An object fetched in
several ranges must not change in between: over HTTP(S) every range after the first is
asked for with ``If-Match`` (412: start again from byte 0), elsewhere the ETag is compared
before and after; a persistent mismatch ends in :class:`FastdataIntegrityError`. Messages
name the object with its URL's query string removed and never carry credentials.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import xxhash

from fastdata import metrics
from fastdata._testing import disk_point, pause_point
from fastdata.daemon_pool import DaemonPool
from fastdata.errors import (
    FastdataCacheError,
    FastdataDownloadError,
    FastdataError,
    FastdataIntegrityError,
)
from fastdata.storage.remote import ObjectChangedError, Store, redact

log = logging.getLogger(__name__)
PERMANENT_STATUS = (400, 401, 403, 404)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Worst case per object: attempts × (request timeout + max_backoff)."""

    attempts: int = 5
    base_backoff: float = 0.2  #: seconds before the second attempt, doubled each time
    max_backoff: float = 5.0
    range_bytes: int = 8 << 20  #: size of the ranged reads of large objects
    parallel: int = 4  #: ranged reads in flight per object


def _status(error: BaseException) -> int | None:
    for candidate in (error, getattr(error, "response", None)):
        for attr in ("status_code", "status"):
            value = getattr(candidate, attr, None)
            if isinstance(value, int):
                return value
    return None


def _retry_after(error: BaseException) -> float | None:
    # azure-core errors carry the response; aiohttp's ClientResponseError the headers
    headers = (getattr(getattr(error, "response", None), "headers", None)
               or getattr(error, "headers", None) or {})
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def backoff(policy: RetryPolicy, attempt: int, error: BaseException) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential from
    ``base_backoff``, capped at ``max_backoff``, jittered down to half so that many readers
    retrying together spread out, and never less than the server's Retry-After (at most 30 s)."""
    ceiling = min(policy.max_backoff, policy.base_backoff * 2 ** (attempt - 1))
    delay = ceiling * (0.5 + random.random() / 2)
    return max(delay, min(_retry_after(error) or 0.0, 30.0))


def is_permanent(error: BaseException) -> bool:
    """Errors that another attempt cannot fix: missing object, no permission, bad request."""
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    status = _status(error)
    if status is None:
        cause = error.__cause__ or error.__context__
        return cause is not None and cause is not error and is_permanent(cause)
    return status in PERMANENT_STATUS


@dataclass
class DownloadStats:
    attempts: int = 0
    retries: int = 0
    bytes: int = 0
    seconds: float = 0.0


def _describe(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {redact(text)}" if text else type(error).__name__


def _write_at(fd: int, data: bytes, offset: int) -> None:
    disk_point("download", len(data))
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _fetch_once(store: Store, name: str, fd: int, size: int, policy: RetryPolicy, offset: int = 0) -> None:
    """One attempt: every range of the object's bytes ``[offset, offset + size)`` into ``fd``
    (from its byte 0), all from one version of it.

    One range is one GET: it returns one version, and the hash check catches the rest. Over
    HTTP(S) the first range names the version (its ETag) and the others are asked for with
    ``If-Match``, so a replaced object answers 412; other backends compare the ETag before
    and after.
    """
    end_all = offset + size
    ranges = [(s, min(s + policy.range_bytes, end_all)) for s in range(offset, end_all, policy.range_bytes)]

    whole: list[bool] = []  # the first range's answer was the whole object (Range ignored)

    def one(bounds: tuple[int, int], if_match: str | None = None, out: int = fd) -> str | None:
        start, end = bounds
        etag = None
        if store.conditional_reads:
            data, etag = store.read_range_tagged(name, start, end, if_match,
                                                 whole=size if offset == 0 and start == 0 and end < size
                                                 else None)
            if if_match is not None and etag is not None and etag != if_match:  # If-Match ignored
                raise ObjectChangedError(f"{store.describe(name)} changed during the download "
                                         f"(ETag {if_match}, then {etag})")
            if offset == 0 and start == 0 and len(data) > end:  # one answer holds every range: check it all
                end = size
                whole.append(True)
        else:
            data = store.read_range(name, start, end)
        metrics.count("fetch.requests")
        if len(data) != end - start:
            raise FastdataIntegrityError(
                f"{store.describe(name)}: bytes {start}-{end - 1} came back as {len(data)} bytes, "
                f"expected {end - start} (truncated or replaced object)")
        _write_at(out, data, start - offset)
        pause_point("mid_download")
        return etag

    if len(ranges) <= 1:
        for r in ranges:
            one(r)
        return

    def own_fd(bounds: tuple[int, int], version: str | None, dup: int) -> str | None:
        try:  # a range left running after Ctrl-C writes through its own descriptor, never a reused one
            return one(bounds, version, dup)
        finally:
            os.close(dup)

    def parallel(rest: list[tuple[int, int]], version: str | None = None) -> None:
        with DaemonPool(min(policy.parallel, len(rest)), "fastdata-range") as pool:
            for future in [pool.submit(own_fd, r, version, os.dup(fd)) for r in rest]:
                future.result()

    if store.conditional_reads:
        version = one(ranges[0])
        if not whole:
            parallel(ranges[1:], version)
        return
    before = store.etag(name)
    parallel(ranges)
    if store.etag(name) != before:
        raise ObjectChangedError(f"{store.describe(name)} changed during the download")


def download(store: Store, name: str, dest: str, size: int, digest: str | None,  # noqa: PLR0913
             policy: RetryPolicy | None = None, on_retry: Callable[[int, BaseException], None] | None = None,
             *, offset: int = 0) -> DownloadStats:
    """Fetch ``name`` (or its ``size`` bytes from ``offset`` on) into the (new, empty) local
    file ``dest`` and verify it against ``digest`` (xxh3-128; None: only its size is
    checked, for formats that carry no hash, such as a Megatron ``.bin``).

    Raises:
        FastdataDownloadError: the object could not be read within the retry budget, or
            the error is permanent (named with the attempt count and the last error).
        FastdataIntegrityError: the bytes never matched the expected size and hash.
        FastdataCacheError: the local disk is full (not retried).
    """
    policy = policy or RetryPolicy()
    stats = DownloadStats()
    started = time.monotonic()
    last: BaseException | None = None
    for attempt in range(1, policy.attempts + 1):
        stats.attempts = attempt
        if attempt > 1 and not os.path.lexists(dest):  # never re-create a temp a clean-up removed
            raise FastdataCacheError(f"{dest} was removed while {store.describe(name)} was being "
                                     "fetched (the process is exiting, or its cache was swept); "
                                     "not fetching it again")
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                _fetch_once(store, name, fd, size, policy, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            with metrics.stage("verify"):
                actual = _hash(dest) if digest is not None else None
            if actual != digest:
                raise FastdataIntegrityError(
                    f"{store.describe(name)}: xxh3_128 is {actual}, the manifest says {digest} "
                    "(the object is corrupt or was replaced; re-pack or re-upload it)")
            stats.bytes, stats.seconds = size, time.monotonic() - started
            return stats
        except OSError as e:
            if e.errno == errno.ENOSPC:
                free = _free_bytes(dest)
                raise FastdataCacheError(
                    f"no space left for {store.describe(name)} in {os.path.dirname(dest)}: needed {size} "
                    f"bytes, {free} free") from None
            last = e
        except FastdataError as e:
            last = e
        except Exception as e:  # noqa: BLE001 - remote backends raise their own types
            last = e
        if is_permanent(last) or attempt == policy.attempts:
            break
        stats.retries += 1
        # an ObjectChangedError has nothing to wait for: start again from byte 0 on the new version
        delay = 0.0 if isinstance(last, ObjectChangedError) else backoff(policy, attempt, last)
        log.warning("fetching %s failed (attempt %d of %d: %s); retrying in %.1f s", store.describe(name),
                    attempt, policy.attempts, _describe(last), delay)
        if on_retry is not None:
            on_retry(attempt, last)
        time.sleep(delay)
    if isinstance(last, FastdataIntegrityError):
        raise FastdataIntegrityError(f"{last} (after {stats.attempts} attempts)") from None
    why = "not retried" if last is not None and is_permanent(last) else f"after {stats.attempts} attempts"
    raise FastdataDownloadError(
        f"cannot fetch {store.describe(name)} ({why}): {_describe(last) if last else 'unknown error'}"
    ) from None


def _hash(path: str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _free_bytes(path: str) -> int:
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
        return st.f_bavail * st.f_frsize
    except OSError:
        return -1


def retrying(what: str, call: Callable[[], T], policy: RetryPolicy | None = None) -> T:
    """``call()`` with the policy's retries for transient errors (small objects: manifests, ETags)."""
    policy = policy or RetryPolicy()
    attempt = 1
    while True:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - classified below
            if is_permanent(e) or attempt >= policy.attempts:
                if isinstance(e, FastdataError):
                    raise
                raise FastdataDownloadError(
                    f"cannot read {what} after {attempt} attempts: {_describe(e)}") from None
            delay = backoff(policy, attempt, e)
            log.warning("reading %s failed (attempt %d of %d: %s); retrying in %.1f s", what, attempt,
                        policy.attempts, _describe(e), delay)
            time.sleep(delay)
            attempt += 1
