"""CPU: cores this process may use, and torch's threads against them."""

from __future__ import annotations

import os
from dataclasses import replace

from fastdata.doctor.report import PASS, WARN, Check, DoctorOptions


def cpu_checks(options: DoctorOptions) -> list[Check]:
    """Cores per rank, and torch's intra-op threads (as this process has them) times the ranks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    ranks = options.ranks_per_node
    per_rank = cores / ranks
    values = {"cores": cores, "cpu_count": os.cpu_count(), "ranks_per_node": ranks}
    limited = f" (of {os.cpu_count()}, by affinity)" if cores != os.cpu_count() else ""
    detail = f"{cores} cores usable{limited}"
    cpu = Check("cpu", PASS, f"{detail}, {per_rank:g} per rank with {ranks} rank(s) per node", values)
    if per_rank < 2:
        cpu = replace(cpu, status=WARN, detail=f"{cpu.detail}: under 2 cores per rank leaves little for "
                      "the loader's prefetch and decompression")
    import torch  # the threads a rank gets, with this environment

    threads, omp = torch.get_num_threads(), options.env.get("OMP_NUM_THREADS")
    thread_values = {"torch_threads": threads, "interop_threads": torch.get_num_interop_threads(),
                     "OMP_NUM_THREADS": omp}
    detail = f"torch uses {threads} thread(s) per process (OMP_NUM_THREADS={omp or 'unset'})"
    if omp is None and ranks > 1:
        detail += " (torchrun sets OMP_NUM_THREADS=1 when it starts several ranks; other launchers do not)"
    if threads * ranks > cores:
        suggest = max(1, cores // ranks)
        return [cpu, Check("threads", WARN, f"{detail}: {ranks} rank(s) x {threads} = {threads * ranks} "
                           f"threads on {cores} cores oversubscribe the CPU; set OMP_NUM_THREADS={suggest}",
                           thread_values)]
    return [cpu, Check("threads", PASS, f"{detail}, {threads * ranks} in all on {cores} cores",
                       thread_values)]
