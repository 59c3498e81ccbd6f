"""The dataset URL: reachable, credentials accepted, a dataset; latency and bandwidth."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from fastdata.doctor.credentials import credential_sources, describe
from fastdata.doctor.report import FAIL, PASS, SKIP, WARN, Check, DoctorOptions
from fastdata.errors import FastdataError
from fastdata.format.manifest import Manifest
from fastdata.format.spec import MANIFEST_NAME
from fastdata.reader.manifest import load_manifest
from fastdata.storage.remote import Store
from fastdata.units import format_size


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_status(error: BaseException) -> int | None:
    for e in _chain(error):
        for candidate in (e, getattr(e, "response", None)):
            for attr in ("status_code", "status"):
                value = getattr(candidate, attr, None)
                if isinstance(value, int) and 100 <= value < 600:
                    return value
    return None


def _probe_failure(store: Store, error: BaseException, options: DoctorOptions) -> Check:
    """Why the first read of the manifest failed: unreachable, refused credentials, no dataset."""
    status = _http_status(error)
    code = getattr(error, "error_code", None)
    code = getattr(code, "value", code)  # azure.storage.blob gives an enum
    http = f"HTTP {status}{f' {code}' if code else ''}"
    if status in (401, 403) or any(isinstance(e, PermissionError) for e in _chain(error)):
        why = http if status else "permission denied"
        used = ", ".join(credential_sources(options)) or "no credentials fastdata can see"
        return Check("credentials", FAIL, f"{store.display} refused access ({why}): the credentials "
                     f"({used}) are wrong, expired or lack read permission; {describe(error)}",
                     {"status": status})
    if status == 404 or any(isinstance(e, FileNotFoundError) for e in _chain(error)):
        return Check("dataset", FAIL, f"{store.describe(MANIFEST_NAME)} does not exist: not a fastdata "
                     "dataset, its pack has not finished, or the container does not exist")
    if status is not None:
        return Check("storage", FAIL, f"{store.display} answered {http}: {describe(error)}",
                     {"status": status})
    return Check("storage", FAIL, f"cannot reach {store.display}: {describe(error)} (check the "
                 "endpoint, DNS, proxy and firewall)")


def _credentials_pass(options: DoctorOptions) -> Check:
    sources = ", ".join(credential_sources(options))
    return Check("credentials", PASS, f"accepted, from {sources} (values not shown)" if sources else
                 "accepted, from nowhere fastdata can see (anonymous access or a managed identity)")


def _after_failed_probe(store: Store, failed: Check, options: DoctorOptions) -> list[Check]:
    """The failed check, with those before it passed and those after it skipped."""
    order = ["storage", "dataset"] if store.local else ["storage", "credentials", "dataset"]
    at = order.index(failed.name)
    passed = {"storage": Check("storage", PASS, f"{store.display} answered"),
              "credentials": _credentials_pass(options)}
    return [passed[n] for n in order[:at]] + [failed] + [
        Check(n, SKIP, f"not checked: {failed.name} failed") for n in order[at + 1:]]


def storage_checks(options: DoctorOptions) -> tuple[list[Check], Manifest | None]:
    """storage, credentials (remote only), dataset, latency and bandwidth for ``options.url``.

    Returns:
        The checks, and the manifest when it could be read (the cache checks size against it).
    """
    try:
        store = Store(str(options.url), options.storage_options)
    except FastdataError as e:
        return [Check("storage", FAIL, str(e))], None
    started = time.monotonic()
    try:
        store.read_range(MANIFEST_NAME, 0, 1)
    except Exception as e:  # noqa: BLE001 - every backend raises its own types; classified here
        return _after_failed_probe(store, _probe_failure(store, e, options), options), None
    took = time.monotonic() - started
    answered = "is a local directory" if store.local else f"answered in {1e3 * took:.0f} ms"
    checks = [Check("storage", PASS, f"{store.display} {answered}", {"seconds": took})]
    if not store.local:
        checks.append(_credentials_pass(options))
    try:
        manifest = load_manifest(store)
    except FastdataError as e:
        return [*checks, Check("dataset", FAIL, str(e))], None
    stored = manifest.shards.column("stored_bytes")
    checks.append(Check("dataset", PASS, f"{len(stored)} shards, {format_size(int(stored.sum()))} stored, "
                        f"fingerprint {manifest.fingerprint[:16]}", {"shards": len(stored)}))
    if len(stored):
        checks += [_latency(store, manifest, options), _bandwidth(store, manifest, options)]
    return checks, manifest


def _latency(store: Store, manifest: Manifest, options: DoctorOptions) -> Check:
    """p50 of small ranged reads spread over the largest shard (time to first byte, mostly)."""
    big = manifest.shards[int(manifest.shards.column("stored_bytes").argmax())]
    size, times = min(4096, big.stored_bytes), []
    deadline = time.monotonic() + options.budget.seconds
    for i in range(options.budget.latency_reads):
        offset = (big.stored_bytes - size) * i // max(1, options.budget.latency_reads)
        started = time.monotonic()
        try:
            store.read_range(big.name, offset, offset + size)
        except Exception as e:  # noqa: BLE001 - the manifest came through, a shard does not
            return Check("latency", FAIL, f"reading {store.describe(big.name)} failed: {describe(e)}")
        times.append(time.monotonic() - started)
        if time.monotonic() > deadline:
            break
    p50 = statistics.median(times)
    status = WARN if p50 > options.thresholds.latency_s else PASS
    values = {"p50_s": p50, "max_s": max(times), "reads": len(times)}
    return Check("latency", status, f"p50 {1e3 * p50:.1f} ms, max {1e3 * max(times):.1f} ms over "
                 f"{len(times)} reads of {size} bytes", values)


def _bandwidth(store: Store, manifest: Manifest, options: DoctorOptions) -> Check:
    """Ranged reads of the largest shards, 4 in flight like the downloader, within the budget."""
    sizes = manifest.shards.column("stored_bytes")
    step = max(1, min(8 << 20, options.budget.read_bytes // 4))
    ranges: list[tuple[str, int, int]] = []
    planned = 0
    for index in sizes.argsort()[::-1]:
        name, size = manifest.shards.name(int(index)), int(sizes[index])
        for start in range(0, size, step):
            if planned >= options.budget.read_bytes:
                break
            ranges.append((name, start, min(size, start + step)))
            planned += ranges[-1][2] - start
        if planned >= options.budget.read_bytes:
            break
    deadline = time.monotonic() + options.budget.seconds
    started = time.monotonic()

    def read(item: tuple[str, int, int]) -> int:
        return 0 if time.monotonic() > deadline else len(store.read_range(*item))

    try:
        with ThreadPoolExecutor(4, thread_name_prefix="fastdata-doctor") as pool:
            total = sum(pool.map(read, ranges))
    except Exception as e:  # noqa: BLE001 - backends raise their own types
        return Check("bandwidth", FAIL, f"downloading from {store.display} failed: {describe(e)}")
    seconds = max(time.monotonic() - started, 1e-9)
    rate = total / seconds
    status = WARN if rate < options.thresholds.download_bytes_per_s and total >= 1 << 20 else PASS
    note = "" if total >= 1 << 20 else " (under 1 MiB to read: a rough figure)"
    note += " (local files, likely from the page cache)" if store.local else ""
    return Check("bandwidth", status, f"{format_size(rate)}/s: {format_size(total)} in {seconds:.2f} s{note}",
                 {"bytes_per_s": rate, "bytes": total, "seconds": seconds})


