"""Credentials carried in a dataset URL's query string (SAS tokens).

The Azure portal hands out URLs such as ``https://acct.blob.core.windows.net/c/ds?sv=...&sig=...``:
the query is a credential for every object under the prefix, not part of the path. This
module takes it off the URL once, so that a :class:`~fastdata.storage.remote.Store` joins
object names to the bare prefix and adds the query to each request:

* ``http://`` / ``https://``: the query is appended to every object URL;
* ``az://`` / ``abfs://`` / ``abfss://``: it becomes adlfs's ``sas_token`` (or, with a
  key-less ``connection_string`` such as an emulator's, its ``SharedAccessSignature``);
* any other scheme: refused, naming the redacted URL (pass credentials in ``storage_options``).

Nothing here logs or formats the query; callers show URLs through ``redact``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from fastdata.errors import FastdataConfigError

AZURE_SCHEMES = ("az", "abfs", "abfss")


def split_query(url: str, options: Mapping[str, Any], display: str) -> tuple[str, dict[str, Any], str]:
    """(``url`` without its query, the storage options, the query to add to each object URL).

    Args:
        url: a remote dataset URL, maybe with a SAS query.
        options: the caller's storage options (not modified).
        display: the redacted URL, for messages.

    Raises:
        FastdataConfigError: a query on a scheme that cannot carry one, or two different SAS
            tokens (one in the URL, one in ``storage_options``).
    """
    parts = urlsplit(url)
    out = dict(options)
    if not parts.query:
        return url, out, ""
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        hide_in_logs(parts.query)
        return bare, out, parts.query
    if scheme in AZURE_SCHEMES:
        given = out.get("sas_token")
        if given and str(given).lstrip("?") != parts.query:
            raise FastdataConfigError(
                f"{display} carries a SAS token and storage_options has another 'sas_token'; give one")
        conn = out.get("connection_string")
        if conn and "accountkey=" not in conn.lower() and "sharedaccesssignature=" not in conn.lower():
            out["connection_string"] = f"{conn.rstrip(';')};SharedAccessSignature={parts.query}"
        else:
            out["sas_token"] = parts.query
        return bare, out, ""
    raise FastdataConfigError(
        f"{display}: a query string on a {scheme}:// URL is not a credential fastdata can use; "
        "pass credentials in storage_options")


#: Loggers of the libraries fastdata calls that write request URLs (fsspec's HTTP filesystem
#: logs each one at DEBUG, query string included).
THIRD_PARTY_LOGGERS = ("fsspec", "fsspec.http", "aiohttp.client")
_hidden: set[str] = set()
_hidden_lock = threading.Lock()


class _Redact(logging.Filter):
    """Replaces every registered SAS query in a record's text with ``<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _hidden:
            return True
        text = record.getMessage()
        changed = text
        for secret in list(_hidden):
            changed = changed.replace(secret, "<redacted>")
        if changed != text:
            record.msg, record.args = changed, None
        return True


_filter = _Redact()


def hide_in_logs(query: str) -> None:
    """Keep ``query`` (and its percent-encoded form) out of the third-party loggers' records."""
    with _hidden_lock:
        if not _hidden:
            for name in THIRD_PARTY_LOGGERS:
                logging.getLogger(name).addFilter(_filter)
        _hidden.update({query, quote(query, safe="")})
