"""Is this node fit to run a job? The checks behind ``fastdata doctor``.

Each check measures one thing the loader depends on (the cache directory, its free space
and throughput, the storage behind the dataset URL, the CPU and thread settings) and gives
a :class:`Check` with a verdict: ``fail`` makes the node unfit, ``warn`` is worth reading,
``skip`` means there was nothing to check. Measurements are bounded in bytes and seconds
(:class:`Budget`). Nothing here prints; every detail is scrubbed of the credential values
the checks were given, on top of the URL redaction the storage layer does.
"""

from fastdata.doctor.report import QUICK, Budget, Check, DoctorOptions, Report, Thresholds
from fastdata.doctor.run import run_checks

__all__ = ["QUICK", "Budget", "Check", "DoctorOptions", "Report", "Thresholds", "run_checks"]
