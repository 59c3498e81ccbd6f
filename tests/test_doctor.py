"""fastdata doctor: a node health check, run as a user would (a fresh process), against a local
dataset and against Azurite (directly, through the fault proxy, with bad credentials)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from unittest import mock

import fsspec
import pytest
from _corpus import make_docs, write_jsonl
from _fs import proxied
from conftest import DEV_KEY, connection_string

import fastdata
from fastdata.cli.main import main
from fastdata.errors import FastdataConfigError
from fastdata.world import World

pytestmark = [pytest.mark.timeout(240), pytest.mark.multiprocess]

CANARY = "SIGCANARY123"
LOCAL_NAMES = ["cache-dir", "cache-space", "cache-write", "cache-read", "storage", "dataset", "latency",
               "bandwidth", "cpu", "threads"]
REMOTE_NAMES = LOCAL_NAMES[:5] + ["credentials"] + LOCAL_NAMES[5:]
LINE = re.compile(r"^(PASS|WARN|FAIL|SKIP) ([a-z-]+): (.*)$")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_STORAGE_", "FASTDATA_"))}
    env.update({"OMP_NUM_THREADS": "1", "FASTDATA_ALLOW_INSECURE": "1", **extra})
    return env


def doctor(*args, env=None, fresh=False):
    """Run ``fastdata doctor --quick`` (in a new process when ``fresh``, with ``-v`` there, else in
    this one: starting Python and torch again takes seconds); return (exit code,
    {name: (status, detail)}, stdout, stderr)."""
    argv = ["-v"] * fresh + ["doctor", "--quick", *map(str, args)]
    if fresh:
        proc = subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", *argv], capture_output=True,
                              text=True, timeout=180, env=env or base_env())
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.dict(os.environ, env or base_env(), clear=True), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        stdout, stderr = out.getvalue(), err.getvalue()
    checks = {}
    if "--json" not in args:
        for line in stdout.splitlines()[:-1]:
            m = LINE.match(line)
            assert m and m.group(2) not in checks, f"not a check line: {line!r}\n{stderr}"
            checks[m.group(2)] = (m.group(1), m.group(3))
    return rc, checks, stdout, stderr


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pack(src, out, env=None, *extra):
    subprocess.run([sys.executable, "-P", "-m", "fastdata.cli.main", "pack", src, "-o", str(out),
                    "--shard-size", "16KB", "--workers", "1", "-q", *extra], check=True, timeout=120,
                   env=env or base_env())


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("doctor")
    src = write_jsonl(str(d / "c.jsonl"), make_docs(300, seed=11))
    pack(src, d / "ds")
    return {"src": src, "url": str(d / "ds")}


@pytest.fixture(scope="module")
def azure_ds(azurite, local_ds):
    """The local corpus packed (uncompressed) to Azurite once for the module."""
    fs = fsspec.filesystem("az", connection_string=azurite["conn"], skip_instance_cache=True)
    fs.mkdir("doctor")
    pack(local_ds["src"], "az://doctor/ds", base_env(AZURE_STORAGE_CONNECTION_STRING=azurite["conn"]))
    yield "az://doctor/ds"
    fs.rm("doctor", recursive=True)


def expected_minimum(url: str, ranks: int) -> int:
    with fastdata.open_dataset(url) as ds:
        return int(ds.shards.column("raw_bytes").max()) * (ranks * 4 + 1)


def test_local_dataset_is_fit_and_leaves_nothing_behind(local_ds, tmp_path):
    cache = tmp_path / "new" / "cache"  # does not exist: checked, created for the measurement, removed
    rc, checks, out, _ = doctor("--cache-dir", cache, "--cache-limit", "1GB", "--url", local_ds["url"],
                                fresh=True)
    assert rc == 0, out
    assert list(checks) == LOCAL_NAMES
    assert all(status in ("PASS", "WARN") for status, _ in checks.values()), out
    assert out.splitlines()[-1].startswith("fit: this node can run the job")
    with fastdata.open_dataset(local_ds["url"]) as ds:
        assert checks["dataset"][1].startswith(f"{len(ds.shards)} shards, ")
    assert "16.0 MiB written with fsync" in checks["cache-write"][1]  # --quick's bounded test file
    assert checks["cache-dir"][1].startswith(f"{cache} does not exist; it will be created (mode 0700) under "
                                             f"{tmp_path};")
    assert list(tmp_path.iterdir()) == []
    cache.mkdir(mode=0o700, parents=True)
    rc, _, out, _ = doctor("--cache-dir", cache, "--url", local_ds["url"], "--json")
    report = json.loads(out)
    assert rc == 0 and report["fit"] is True and report["unfit"] == []
    assert [c["name"] for c in report["checks"]] == LOCAL_NAMES
    assert report["checks"][3]["values"]["bytes"] == 16 << 20
    assert list(cache.iterdir()) == []  # the scratch file is gone


def test_cache_limit_below_the_loaders_minimum_is_unfit(local_ds, tmp_path):
    minimum = expected_minimum(local_ds["url"], ranks=2)
    rc, checks, out, _ = doctor("--cache-dir", tmp_path, "--cache-limit", minimum - 1,
                                "--url", local_ds["url"], "--ranks-per-node", 2)
    assert rc == 1
    assert checks["cache-space"][0] == "FAIL"
    assert f"use at least {minimum} bytes" in checks["cache-space"][1]
    assert out.splitlines()[-1] == "UNFIT: failed cache-space"
    rc, checks, out, _ = doctor("--cache-dir", tmp_path, "--cache-limit", minimum, "--url", local_ds["url"],
                                "--ranks-per-node", 2)
    assert rc == 0 and checks["cache-space"][0] == "PASS", out
    # the loader draws the same line
    world = World(rank=0, world_size=2, local_rank=0, ranks_per_node=2)
    with pytest.raises(FastdataConfigError, match=f"use at least {minimum} bytes"):
        fastdata.TokenDataset(local_ds["url"], seq_len=16, world=world, cache_dir=str(tmp_path),
                              cache_limit=minimum - 1)
    fastdata.TokenDataset(local_ds["url"], seq_len=16, world=world, cache_dir=str(tmp_path),
                          cache_limit=minimum)


def test_cache_limit_beyond_the_free_space_is_unfit(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    rc, checks, out, _ = doctor("--cache-dir", tmp_path / "c", "--cache-limit", free * 4)
    assert rc == 1
    assert checks["cache-space"][0] == "FAIL"
    assert "the cache would fill the disk" in checks["cache-space"][1]
    assert checks["storage"] == ("SKIP", "no --url given")
    assert out.splitlines()[-1] == "UNFIT: failed cache-space"


def test_unusable_or_shared_cache_dirs(tmp_path):
    not_dir = tmp_path / "file"
    not_dir.write_bytes(b"x")
    rc, checks, out, _ = doctor("--cache-dir", not_dir)
    assert rc == 1 and checks["cache-dir"] == ("FAIL", f"{not_dir} exists and is not a directory")
    assert [checks[n][0] for n in ("cache-space", "cache-write", "cache-read")] == ["SKIP"] * 3
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    rc, checks, out, _ = doctor("--cache-dir", open_dir)
    assert rc == 0 and checks["cache-dir"][0] == "WARN" and "chmod 700" in checks["cache-dir"][1], out
    if os.getuid() == 0:  # a world-writable directory of another user: the node cache refuses it
        open_dir.chmod(0o777)
        os.chown(open_dir, 4242, 4242)
        rc, checks, out, _ = doctor("--cache-dir", open_dir)
        assert rc == 1 and checks["cache-dir"][0] == "FAIL" and "owned by uid 4242" in checks["cache-dir"][1]


def test_threads_oversubscribing_the_cores_warn(tmp_path):
    cores = len(os.sched_getaffinity(0))
    rc, checks, out, _ = doctor("--cache-dir", tmp_path, "--ranks-per-node", 4,
                                env=base_env(OMP_NUM_THREADS=str(cores)), fresh=True)
    assert rc == 0  # a warning, not unfit
    assert checks["threads"][0] == "WARN"
    assert f"4 rank(s) x {cores} = {4 * cores} threads on {cores} cores" in checks["threads"][1]
    assert f"set OMP_NUM_THREADS={max(1, cores // 4)}" in checks["threads"][1]
    rc, checks, out, _ = doctor("--cache-dir", tmp_path, env=base_env(OMP_NUM_THREADS="1"), fresh=True)
    assert checks["threads"][0] == "PASS" and "torch uses 1 thread(s)" in checks["threads"][1]


def test_unreachable_storage_fails_fast(tmp_path):
    port = closed_port()
    conn = connection_string(port)
    rc, checks, out, err = doctor("--cache-dir", tmp_path, "--url", "az://doctor/ds",
                                  env=base_env(AZURE_STORAGE_CONNECTION_STRING=conn))
    assert rc == 1
    assert checks["storage"][0] == "FAIL" and checks["storage"][1].startswith("cannot reach az://doctor/ds")
    assert f"127.0.0.1:{port}" in checks["storage"][1]
    assert checks["credentials"][0] == checks["dataset"][0] == "SKIP"
    assert "latency" not in checks and out.splitlines()[-1] == "UNFIT: failed storage"
    assert DEV_KEY[:20] not in out + err
    started = time.monotonic()
    rc, checks, out, _ = doctor("--cache-dir", tmp_path, "--url", f"http://127.0.0.1:{port}/ds")
    seconds = time.monotonic() - started
    assert rc == 1 and checks["storage"][0] == "FAIL", out
    assert checks["storage"][1].startswith(f"cannot reach http://127.0.0.1:{port}/ds")
    assert seconds < 20  # one refused connection, no retry storm (the cache measurements included)


def test_good_azurite_dataset_is_fit(azurite, azure_ds, local_ds, tmp_path):
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=azurite["conn"])
    minimum = expected_minimum(local_ds["url"], ranks=1)
    rc, checks, out, _ = doctor("--cache-dir", tmp_path / "cache", "--cache-limit", minimum,
                                "--url", azure_ds, env=env)
    assert rc == 0, out
    assert list(checks) == REMOTE_NAMES
    assert [checks[n][0] for n in ("storage", "credentials", "dataset", "cache-space")] == ["PASS"] * 4
    assert checks["credentials"][1] == "accepted, from $AZURE_STORAGE_CONNECTION_STRING (values not shown)"
    with fastdata.open_dataset(local_ds["url"]) as ds:
        stored = int(ds.shards.column("stored_bytes").sum())
    rc, _, out, err = doctor("--cache-dir", tmp_path / "cache", "--url", azure_ds, "--json", env=env)
    report = {c["name"]: c for c in json.loads(out)["checks"]}
    assert report["bandwidth"]["values"]["bytes"] == stored  # the whole (small) dataset, once
    assert report["latency"]["values"]["reads"] == 3
    assert DEV_KEY[:20] not in out + err and "AccountKey" not in out + err


def test_missing_manifest_is_not_a_dataset(azurite, azure_ds, tmp_path):
    env = base_env(AZURE_STORAGE_CONNECTION_STRING=azurite["conn"])
    rc, checks, out, _ = doctor("--cache-dir", tmp_path, "--url", "az://doctor/nothing-here", env=env)
    assert rc == 1
    assert [checks[n][0] for n in ("storage", "credentials", "dataset")] == ["PASS", "PASS", "FAIL"]
    assert checks["dataset"][1].startswith("az://doctor/nothing-here/manifest.json does not exist")
    assert out.splitlines()[-1] == "UNFIT: failed dataset"


def test_bad_credentials_are_named_and_never_printed(azurite, azure_ds, tmp_path):
    bad_key = CANARY + DEV_KEY[len(CANARY):]  # valid base64, wrong key
    bad_conn = azurite["conn"].replace(DEV_KEY, bad_key)
    sas = f"sv=2021-08-06&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig={CANARY}abc%3D"
    sas_conn = f"BlobEndpoint=http://127.0.0.1:{azurite['port']}/devstoreaccount1;SharedAccessSignature={sas}"
    runs = [
        (("--url", azure_ds), base_env(AZURE_STORAGE_CONNECTION_STRING=bad_conn),
         "$AZURE_STORAGE_CONNECTION_STRING"),
        (("--url", azure_ds, "--json"), base_env(AZURE_STORAGE_CONNECTION_STRING=bad_conn), None),
        (("--url", azure_ds, "--storage-option", f"connection_string={sas_conn}"), base_env(),
         "storage option connection_string"),
        (("--url", azure_ds, "--storage-option", f"connection_string={bad_conn}"), base_env(),
         "storage option connection_string"),
    ]
    for i, (args, env, source) in enumerate(runs):
        # two in fresh processes, with -v: debug logs of fastdata, adlfs and azure.core included
        rc, checks, out, err = doctor("--cache-dir", tmp_path, *args, env=env, fresh=i % 2 == 0)
        assert rc == 1, out + err
        everything = (out + err).lower()
        assert CANARY.lower() not in everything
        assert DEV_KEY[len(CANARY):len(CANARY) + 20].lower() not in everything  # nor the rest of the key
        if "--json" in args:
            assert json.loads(out)["unfit"] == ["credentials"]
            continue
        assert checks["credentials"][0] == "FAIL"
        assert "refused access (HTTP 403" in checks["credentials"][1]
        assert f"the credentials ({source})" in checks["credentials"][1]
        assert out.splitlines()[-1] == "UNFIT: failed credentials"


def test_latency_and_bandwidth_are_measured_through_a_slow_link(azurite, azure_ds, local_ds, tmp_path):
    with proxied(azurite["port"]) as proxy:
        proxy.faults.latency_s = 0.15  # each way: a ranged GET takes at least 0.3 s
        proxy.faults.rate_bps = 100_000
        env = base_env(AZURE_STORAGE_CONNECTION_STRING=connection_string(proxy.port))
        rc, _, out, _ = doctor("--cache-dir", tmp_path, "--url", azure_ds, "--json", env=env)
    report = json.loads(out)
    assert rc == 0 and report["fit"], out
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["latency"]["status"] == "warn" and checks["latency"]["values"]["p50_s"] >= 0.3
    bw = checks["bandwidth"]["values"]
    assert 0 < bw["bytes"] <= 4 << 20 and bw["seconds"] <= 2.0 + 1.0  # --quick: 4 MiB or 2 s at most
    assert bw["bytes_per_s"] <= 4 * 100_000 * 1.2  # 4 connections at 100 kB/s each


def test_scrubber_removes_every_credential_value_and_nothing_else():
    from fastdata.doctor import Check, DoctorOptions
    from fastdata.doctor.credentials import credential_sources, scrubber

    key = CANARY + "a1b2c3d4e5f6g7h8=="
    conn = f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={key};BlobEndpoint=http://h:1/acct;"
    sas = f"sv=2021-08-06&sp=rl&sig={CANARY}x%2By%3D"
    options = DoctorOptions(
        cache_dir="/c", url=f"az://c/ds?{sas}",
        storage_options={"connection_string": conn, "account_name": "acct", "allow_insecure": True},
        env={"AZURE_STORAGE_SAS_TOKEN": "other-" + sas, "OMP_NUM_THREADS": "4", "AWS_PROFILE": "dev"})
    detail = (f"endpoint http://h:1/acct account acct: {conn} | key {key} | sig {CANARY}x+y= | "
              f"{CANARY}x%2By%3D | url az://c/ds?{sas}")
    scrubbed = scrubber(options)(Check("x", "fail", detail, {"text": key, "n": 3}))
    assert scrubbed.detail == ("endpoint http://h:1/acct account acct: <redacted> | key <redacted> | "
                               "sig <redacted> | <redacted> | url az://c/ds?<redacted>")
    assert scrubbed.values == {"text": "<redacted>", "n": 3}
    assert credential_sources(options) == ["storage option connection_string", "$AZURE_STORAGE_SAS_TOKEN",
                                           "$AWS_PROFILE"]
