"""What the test machine allows: private tmpfs mounts and PID namespaces (``unshare``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def tmpfs_works(where: Path) -> bool:
    """Whether ``unshare -Urm`` can mount a small tmpfs at ``where`` (a full disk on demand)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=1m none {where}"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


def pid_namespaces_work() -> bool:
    """Whether ``unshare -Urpf --mount-proc`` gives a process its own PID namespace (pid 1)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urpf", "--mount-proc", "sh", "-c", "echo $$"], capture_output=True,
                           text=True, timeout=20)
    return probe.returncode == 0 and probe.stdout.strip() == "1"
