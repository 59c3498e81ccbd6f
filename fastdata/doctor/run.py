"""Running the checks in order, each group guarded, and scrubbing the result."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastdata.doctor.cache import cache_checks
from fastdata.doctor.cpu import cpu_checks
from fastdata.doctor.credentials import describe, scrubber
from fastdata.doctor.report import FAIL, SKIP, Check, DoctorOptions, Report
from fastdata.doctor.storage import storage_checks
from fastdata.format.manifest import Manifest

log = logging.getLogger(__name__)


def _guarded(group: str, run: Callable[[], list[Check]]) -> list[Check]:
    """A check that crashes is a failure naming the error, not a crashed doctor."""
    try:
        return run()
    except Exception as e:  # noqa: BLE001 - reported as the check's verdict
        log.debug("the %s check crashed", group, exc_info=True)
        return [Check(group, FAIL, f"the check itself failed: {describe(e)}")]


def run_checks(options: DoctorOptions) -> Report:
    """Run every check: the dataset first (its shard sizes set the cache's minimum), then the
    cache directory, then the CPU; reported cache first.

    Returns:
        The report, every detail scrubbed of the credential values in ``options``.
    """
    manifest: list[Manifest] = []
    if options.url:
        def storage() -> list[Check]:
            checks, found = storage_checks(options)
            manifest.extend([found] if found is not None else [])
            return checks
        remote = _guarded("storage", storage)
    else:
        remote = [Check("storage", SKIP, "no --url given")]
    found = manifest[0] if manifest else None
    checks = _guarded("cache", lambda: cache_checks(options, found)) + remote
    checks += _guarded("cpu", lambda: cpu_checks(options))
    scrub = scrubber(options)
    return Report(tuple(scrub(c) for c in checks))
