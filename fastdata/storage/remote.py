"""Where datasets live: a local directory or any fsspec URL.

This is the only module that imports fsspec. A :class:`Store` is a dataset root (a
directory or an object-store prefix) with the handful of operations fastdata needs:
read a small object, publish a file under a name (atomically), fetch a file to local
disk. Names are single path components checked by the manifest layer; URLs shown in
messages have their query strings (SAS tokens) removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastdata.atomic import atomic_output, write_bytes_atomic
from fastdata.errors import FastdataConfigError, FastdataError, FastdataIOError

_LOCAL_SCHEMES = ("", "file", "local")


def redact(url: str) -> str:
    """``url`` without query string, fragment or user info, safe to show."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain or Windows-drive path
        return url.split("?", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def is_local(url: str) -> bool:
    scheme = urlsplit(url).scheme
    return scheme in _LOCAL_SCHEMES or len(scheme) == 1


#: Credentials of the stores this process opened, by an opaque id: what a pickled Store
#: carries instead of them (a forked DataLoader worker finds them here).
_SECRETS: dict[str, tuple[str, dict[str, Any]]] = {}


class Store:
    """A dataset root on local disk or behind fsspec.

    A pickled Store holds no credentials (not even a SAS token in the URL): it refers to
    them by an id that only this process and its forked children can resolve.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self._secret_id = ""
        if storage_options or urlsplit(url).query:
            self._secret_id = secrets.token_hex(8)
            _SECRETS[self._secret_id] = (url, dict(storage_options or {}))
        self._open(url, storage_options)

    def __getstate__(self) -> dict[str, Any]:
        if self._secret_id:
            return {"secret_id": self._secret_id, "display": self.display}
        return {"url": self.url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "url" in state:
            self._secret_id = ""
            self._open(state["url"], None)
            return
        found = _SECRETS.get(state["secret_id"])
        if found is None:
            raise FastdataConfigError(
                f"cannot reopen {state['display']} in this process: its credentials are never pickled, "
                "and this process was not forked from the one that opened it; use the threads backend, "
                "the fork start method, or credentials from the environment")
        self._secret_id = state["secret_id"]
        self._open(*found)

    def _open(self, url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url.rstrip("/") or url
        self.display = redact(self.url)
        self.local = is_local(url)
        self.allow_insecure = False
        if self.local:
            self._root = url[len("file://"):] if url.startswith("file://") else url
            self._fs_made = (None, os.getpid(), url, {})
        else:
            import fsspec  # the one place fastdata touches fsspec

            options = dict(storage_options or {})
            self.allow_insecure = bool(options.pop("allow_insecure", False)) or (
                os.environ.get("FASTDATA_ALLOW_INSECURE") == "1")
            options = _with_defaults(urlsplit(url).scheme, options)
            try:
                fs, self._root = fsspec.core.url_to_fs(url, **options)
            except (ImportError, ValueError) as e:
                raise FastdataConfigError(f"cannot open {self.display}: {redact(str(e))}") from None
            self._root = self._root.rstrip("/")
            _own_the_retries(fs)
            self._fs_made = (fs, os.getpid(), url, options)

    @property
    def _fs(self) -> Any:
        """The fsspec filesystem, made again in a forked child: async filesystems (adlfs, s3fs,
        http) refuse to run in a process other than the one that made them."""
        fs, pid, url, options = self._fs_made
        if fs is not None and pid != os.getpid():
            import fsspec

            fs = fsspec.core.url_to_fs(url, **options)[0]
            _own_the_retries(fs)
            self._fs_made = (fs, os.getpid(), url, options)
        return fs

    def __repr__(self) -> str:
        return f"Store({self.display!r})"

    def path(self, name: str) -> str:
        """Local path (for local stores) or fsspec path of ``name`` under the root."""
        return os.path.join(self._root, name) if self.local else f"{self._root}/{name}"

    def describe(self, name: str) -> str:
        """``name`` under the root, as shown in messages (no secrets)."""
        return f"{self.display}/{name}"

    @contextlib.contextmanager
    def _guard(self, action: str, name: str) -> Iterator[None]:
        """Turn any storage failure into a FastdataIOError naming the object, no secrets.

        Remote backends raise their own types (adlfs raises ``azure.core`` errors, not
        OSError), so everything but fastdata's own errors is wrapped here.
        """
        try:
            yield
        except FileNotFoundError:
            raise FastdataIOError(f"{self.describe(name)} does not exist") from None
        except FastdataError:
            raise
        except Exception as e:  # noqa: BLE001 - see the docstring
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise FastdataIOError(
                f"{action} {self.describe(name)} failed: {type(e).__name__}: {redact(first_line)}"
            ) from None

    def make_root(self) -> None:
        with self._guard("creating", ""):
            if self.local:
                os.makedirs(self._root, exist_ok=True)
            else:
                self._fs.makedirs(self._root, exist_ok=True)

    def size(self, name: str) -> int | None:
        """Size of ``name`` in bytes, or None when it does not exist."""
        with self._guard("looking up", name):
            try:
                if self.local:
                    return os.stat(self.path(name)).st_size
                return int(self._fs.info(self.path(name))["size"])
            except FileNotFoundError:
                return None

    def read_bytes(self, name: str) -> bytes:
        with self._guard("reading", name):
            if self.local:
                with open(self.path(name), "rb") as f:
                    return f.read()
            return bytes(self._fs.cat_file(self.path(name)))

    def read_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``name`` (one ranged GET remotely). Errors are raised as
        the backend raises them, for the caller's retry policy to classify."""
        if self.local:
            with open(self.path(name), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return bytes(self._fs.cat_file(self.path(name), start=start, end=end))

    def etag(self, name: str) -> str | None:
        """The object's ETag (None for local files or backends without one)."""
        if self.local:
            return None
        info = self._fs.info(self.path(name))
        value = info.get("etag") or info.get("ETag")
        return str(value) if value is not None else None

    def map_bytes(self, name: str) -> bytes | memoryview:
        """The bytes of ``name``: memory-mapped (read-only) when local, else read."""
        if not self.local:
            return self.read_bytes(name)
        import mmap

        with self._guard("mapping", name), open(self.path(name), "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` atomically (temp + rename locally; one PUT remotely)."""
        with self._guard("writing", name):
            if self.local:
                write_bytes_atomic(self.path(name), data)
            else:
                self._fs.pipe_file(self.path(name), data)

    def publish(self, local_file: str, name: str) -> None:
        """Put the finished local file ``local_file`` under ``name``.

        Locally this is a rename when ``local_file`` is already in the root; otherwise a
        copy through a temp file. Remotely it is one upload: object stores make an object
        visible only when its upload completes.
        """
        dest = self.path(name)
        with self._guard("publishing", name):
            if self.local:
                if os.path.dirname(os.path.abspath(local_file)) == os.path.abspath(self._root):
                    os.replace(local_file, dest)
                else:
                    with open(local_file, "rb") as src, atomic_output(dest) as out:
                        shutil.copyfileobj(src, out, 8 << 20)
            else:
                self._fs.put_file(local_file, dest)

    def remove(self, name: str) -> None:
        """Delete ``name``; nothing happens when it does not exist."""
        with self._guard("removing", name):
            try:
                if self.local:
                    os.unlink(self.path(name))
                else:
                    self._fs.rm_file(self.path(name))
            except FileNotFoundError:
                pass


#: Per-request timeouts for Azure (adlfs) when the caller sets none, in seconds.
AZURE_TIMEOUTS = {"connection_timeout": 10, "read_timeout": 30}


def _with_defaults(scheme: str, options: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if scheme in ("az", "abfs", "abfss"):
        for key, value in AZURE_TIMEOUTS.items():
            out.setdefault(key, value)
        out.setdefault("skip_instance_cache", True)
    return out


def _own_the_retries(fs: Any) -> None:
    """Switch off the Azure SDK's own request retries (about 85 s of backoff before it gives
    up on a dead server): fastdata retries above it with a bounded policy and a budget it
    can report (``storage/download.py``)."""
    config = getattr(getattr(fs, "service_client", None), "_config", None)
    policy = getattr(config, "retry_policy", None)
    if policy is not None and hasattr(policy, "total_retries"):
        policy.total_retries = 0
