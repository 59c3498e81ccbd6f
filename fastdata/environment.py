"""The environment variables fastdata reads: the only module in ``fastdata/`` that reads ``os.environ``.

Every read goes through one of the small accessors below, so a newcomer can see in one place
which variables change fastdata's behaviour (``tests/test_environment.py`` fails on a read
anywhere else):

* :func:`launcher`: the rank layout torchrun (or a compatible launcher) exports, read by
  ``World.from_env`` (``fastdata/world.py``) and ``fastdata bench``.
* :func:`allow_insecure`: ``FASTDATA_ALLOW_INSECURE=1`` lets a store talk plain HTTP
  (``storage/remote.py``).
* :func:`endpoints`: the variables fsspec's backends take an endpoint from, so that a
  plain-HTTP one is refused unless allowed (``storage/backends.py``, ``insecure_endpoint``).
* :func:`ray_address`: ``RAY_ADDRESS``, the default of ``fastdata pack --ray-address``.
* :func:`snapshot`: the whole environment, for ``fastdata doctor`` (it names credentials
  found there, never their values).
* :func:`pause_hook`, :func:`pause_dir`, :func:`delay_hook`, :func:`enospc_hook`: the test
  hooks of ``fastdata/_testing.py``; :func:`forwarded_to_tasks` hands the first two to Ray tasks
  (``pack/ray_engine.py``).

Writes are not reads and stay where they set up a child's environment: ``pack/workers.py``
(``_worker_init`` sets ``TOKENIZERS_PARALLELISM`` / ``RAYON_NUM_THREADS`` in each encoding
process) and ``pack/ray_tasks.py`` (``Area.open`` sets or unsets each task's variables).
"""

from __future__ import annotations

import os

#: The launcher's variables :func:`launcher` returns (``World.from_env`` says which wins).
LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "FASTDATA_RANKS_PER_NODE",
                      "FASTDATA_NODE_ID", "GROUP_RANK", "NODE_RANK")
#: Where fsspec's backends may find an endpoint besides the storage options.
ENDPOINT_VARIABLES = ("AZURE_STORAGE_CONNECTION_STRING", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
#: The crash-test kill points (``fastdata/_testing.py``) reach Ray tasks as the driver has them.
FORWARDED_TO_TASKS = ("FASTDATA_TEST_PAUSE", "FASTDATA_TEST_PAUSE_DIR")


def _subset(names: tuple[str, ...]) -> dict[str, str]:
    return {name: os.environ[name] for name in names if name in os.environ}


def launcher() -> dict[str, str]:
    """The set variables among :data:`LAUNCHER_VARIABLES` (rank, world size, node id)."""
    return _subset(LAUNCHER_VARIABLES)


def allow_insecure() -> bool:
    """``FASTDATA_ALLOW_INSECURE=1``: a store may use a plain-HTTP endpoint."""
    return os.environ.get("FASTDATA_ALLOW_INSECURE") == "1"


def endpoints() -> dict[str, str]:
    """The set variables among :data:`ENDPOINT_VARIABLES` (they may hold credentials)."""
    return _subset(ENDPOINT_VARIABLES)


def ray_address() -> str | None:
    """``RAY_ADDRESS``: the Ray cluster to run on, or None."""
    return os.environ.get("RAY_ADDRESS")


def snapshot() -> dict[str, str]:
    """A copy of the whole environment (``fastdata doctor``: the job's view of it)."""
    return dict(os.environ)


def pause_hook() -> str | None:
    """``FASTDATA_TEST_PAUSE=<site>:<n>``: a deterministic kill point (``_testing.pause_point``)."""
    return os.environ.get("FASTDATA_TEST_PAUSE")


def pause_dir() -> str:
    """``FASTDATA_TEST_PAUSE_DIR``: where a pause point writes ``<site>.ready`` (default ``.``)."""
    return os.environ.get("FASTDATA_TEST_PAUSE_DIR", ".")


def delay_hook() -> str | None:
    """``FASTDATA_TEST_DELAY=<site>:<seconds>`` (``_testing.delay_point``)."""
    return os.environ.get("FASTDATA_TEST_DELAY")


def enospc_hook() -> str | None:
    """``FASTDATA_TEST_ENOSPC=<site>:<bytes>`` (``_testing.disk_point``)."""
    return os.environ.get("FASTDATA_TEST_ENOSPC")


def forwarded_to_tasks() -> tuple[tuple[str, str | None], ...]:
    """(name, value or None when unset) of each of :data:`FORWARDED_TO_TASKS`, for a Ray task to set."""
    return tuple((name, os.environ.get(name)) for name in FORWARDED_TO_TASKS)
