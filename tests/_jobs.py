"""A fake multi-node training job for the tests: one child process per rank.

Each rank gets torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and
``FASTDATA_NODE_ID``, runs ``worker config.json`` in its own session (so a SIGKILL to its
group also takes its DataLoader workers), logs to ``log-<rank>.txt`` and writes
``result-<rank>.json`` (or ``ready-<rank>.json`` when it reached a kill point).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TOPOLOGY_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "FASTDATA_NODE_ID",
                "FASTDATA_RANKS_PER_NODE", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
JOBS: list[Job] = []  # every job started, so that none outlives a failed or timed-out test


def kill_all() -> None:
    for job in JOBS:
        job.kill()


class Job:
    """The ranks of one fake training job: ``nodes`` × ``per_node`` child processes."""

    def __init__(self, worker: Path, tmp: Path, nodes: int, per_node: int, *, torchrun: bool = False,
                 **cfg) -> None:
        """With ``torchrun``, each fake node is one real ``torch.distributed.run`` launcher
        (static rendezvous on loopback) starting its ``per_node`` ranks; the node's id then
        comes from torchrun's GROUP_RANK, and its log holds all of its ranks' output."""
        JOBS.append(self)
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.world_size = nodes * per_node
        self.cfg = {"out": str(self.dir), "init_file": str(self.dir / "pg-init"), **cfg}
        config = self.dir / "config.json"
        config.write_text(json.dumps(self.cfg))
        base = {k: v for k, v in os.environ.items() if k not in TOPOLOGY_ENV}
        base.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
        self.started = time.monotonic()
        self.procs: list[subprocess.Popen] = []
        self.logs_of = [f"log-{r}.txt" for r in range(self.world_size)]
        if torchrun:
            self._torchrun(worker, config, base, nodes, per_node)
            return
        for rank in range(self.world_size):
            env = dict(base, RANK=str(rank), WORLD_SIZE=str(self.world_size),
                       LOCAL_RANK=str(rank % per_node), LOCAL_WORLD_SIZE=str(per_node),
                       FASTDATA_NODE_ID=str(rank // per_node))
            with open(self.dir / f"log-{rank}.txt", "wb") as log:
                self.procs.append(subprocess.Popen([sys.executable, "-P", str(worker), str(config)],
                                                   env=env, stdout=log, stderr=log, start_new_session=True))

    def _torchrun(self, worker: Path, config: Path, base: dict, nodes: int, per_node: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.logs_of = [f"log-node{n}.txt" for n in range(nodes)]
        for node in range(nodes):
            cmd = [sys.executable, "-P", "-m", "torch.distributed.run", "--nnodes", str(nodes),
                   "--node_rank", str(node), "--nproc_per_node", str(per_node), "--master_addr", "127.0.0.1",
                   "--master_port", str(port), "--max_restarts", "0", str(worker), str(config)]
            with open(self.dir / self.logs_of[node], "wb") as log:
                self.procs.append(subprocess.Popen(cmd, env=base, stdout=log, stderr=log,
                                                   start_new_session=True))

    def logs(self) -> str:
        return "\n".join(f"--- {name} (rc={p.poll()}):\n"
                         + (self.dir / name).read_text(errors="replace")[-3000:]
                         for name, p in zip(self.logs_of, self.procs))

    def kill(self) -> None:
        """SIGKILL every process of the job at once: each launcher's process group, and every
        descendant (torchrun starts each rank in a session of its own, with its DataLoader
        workers in the rank's group)."""
        import psutil

        groups = set()
        for p in self.procs:
            if p.poll() is None:
                try:
                    groups.update(os.getpgid(c.pid) for c in psutil.Process(p.pid).children(recursive=True))
                except (psutil.Error, ProcessLookupError):
                    pass
                groups.add(p.pid)
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait(timeout=30)

    def wait(self, timeout: float = 100) -> list[dict]:
        """Wait for every rank; their results in rank order. Any failure kills the job."""
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs):
            failed = [p for p in self.procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"job {'failed' if failed else 'timed out'}:\n{self.logs()}")
            time.sleep(0.05)
        if any(p.returncode != 0 for p in self.procs):
            raise AssertionError(f"job failed:\n{self.logs()}")
        return [json.loads((self.dir / f"result-{r}.json").read_text()) for r in range(self.world_size)]

    def wait_ready(self, timeout: float = 100) -> None:
        """Wait until every rank wrote its ready file (it then sleeps), then SIGKILL the job."""
        deadline = time.monotonic() + timeout
        while not all((self.dir / f"ready-{r}.json").exists() for r in range(self.world_size)):
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"job never got ready:\n{self.logs()}")
            time.sleep(0.02)
        self.kill()
        if not all(p.returncode == -signal.SIGKILL for p in self.procs):
            raise AssertionError(f"job did not die by SIGKILL:\n{self.logs()}")
