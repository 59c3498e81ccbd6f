"""What each fsspec backend needs from fastdata: default timeouts, where its endpoint is
(to refuse plain HTTP unless opted in), and switching off its own retries (fastdata retries
above it, with a bounded, reported budget; ``storage/download.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastdata.errors import FastdataConfigError

#: Per-request timeouts (Azure and HTTP(S)) when the caller sets none, in seconds.
AZURE_TIMEOUTS = {"connection_timeout": 10, "read_timeout": 30}
_AZURE = ("az", "abfs", "abfss")


def with_defaults(scheme: str, options: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if scheme in _AZURE:
        for key, value in AZURE_TIMEOUTS.items():
            out.setdefault(key, value)
        out.setdefault("skip_instance_cache", True)
    elif scheme in ("http", "https"):
        # aiohttp's default is one 5-minute total: no connect timeout of its own, so an
        # unreachable host or a dead DNS server holds a download for minutes.
        try:
            import aiohttp
        except ImportError:
            raise FastdataConfigError("http(s):// datasets are read with fsspec's HTTP filesystem, "
                                      "which needs aiohttp: pip install aiohttp") from None

        connect = out.pop("connection_timeout", AZURE_TIMEOUTS["connection_timeout"])
        read = out.pop("read_timeout", AZURE_TIMEOUTS["read_timeout"])
        client = dict(out.get("client_kwargs") or {})
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, connect=connect, sock_read=read))
        out["client_kwargs"] = client
    return out


def insecure_endpoint(scheme: str, url: str, options: Mapping[str, Any],
                      env: Mapping[str, str]) -> str | None:
    """The plain-``http://`` endpoint a store at ``url`` would talk to, or None.

    Looks where fsspec's backends take their endpoint from: the URL itself, an Azure
    connection string (``storage_options`` or ``AZURE_STORAGE_CONNECTION_STRING``),
    ``account_url`` / ``account_host``, and ``endpoint_url`` (also in ``client_kwargs``, and
    the AWS_ENDPOINT_URL variables for s3).
    """
    if scheme == "http":
        return url
    client = options.get("client_kwargs") or {}
    candidates: list[Any] = [options.get("endpoint_url"), client.get("endpoint_url")]
    if scheme in _AZURE:
        conn = options.get("connection_string") or env.get("AZURE_STORAGE_CONNECTION_STRING")
        candidates += [_connection_endpoint(conn) if conn else None, options.get("account_url"),
                       options.get("account_host")]
    if scheme in ("s3", "s3a"):
        candidates += [env.get("AWS_ENDPOINT_URL_S3"), env.get("AWS_ENDPOINT_URL")]
    for value in candidates:
        if isinstance(value, str) and value.strip().lower().startswith("http://"):
            return value.strip()
    return None


def _connection_endpoint(conn: str) -> str | None:
    """The plain-HTTP endpoint an Azure connection string names, if any."""
    fields = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in conn.split(";"))}
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        return "http://127.0.0.1:10000/devstoreaccount1"
    endpoints = [v for k, v in fields.items() if k.endswith("endpoint")]
    plain = [v for v in endpoints if v.lower().startswith("http://")]
    if plain:
        return plain[0]
    if not endpoints and fields.get("defaultendpointsprotocol", "").lower() == "http":
        suffix = fields.get("endpointsuffix", "core.windows.net")
        return f"http://{fields.get('accountname', '<account>')}.blob.{suffix}"
    return None


def own_the_retries(fs: Any) -> None:
    """Switch off the Azure SDK's own request retries (about 85 s of backoff before it gives
    up on a dead server): fastdata retries above it with a bounded policy and a budget it
    can report (``storage/download.py``)."""
    config = getattr(getattr(fs, "service_client", None), "_config", None)
    policy = getattr(config, "retry_policy", None)
    if policy is not None and hasattr(policy, "total_retries"):
        policy.total_retries = 0
