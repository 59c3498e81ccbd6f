"""Where datasets live: a local directory or any fsspec URL.

This is the only module that imports fsspec. A :class:`Store` is a dataset root (a
directory or an object-store prefix) with the handful of operations fastdata needs:
read a small object, publish a file under a name (atomically), fetch a file to local
disk. Names are single path components checked by the manifest layer; a SAS query on the
dataset URL applies to every object (``fastdata.storage.sas``) and is never shown.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastdata import environment
from fastdata.atomic import write_bytes_atomic
from fastdata.errors import FastdataConfigError, FastdataError, FastdataIntegrityError, FastdataIOError
from fastdata.storage.backends import insecure_endpoint, own_the_retries, with_defaults
from fastdata.storage.sas import split_query

_LOCAL_SCHEMES = ("", "file", "local")


class ObjectChangedError(FastdataIntegrityError):
    """The object is no longer the version a download started on (HTTP 412 to If-Match)."""


def redact(url: str) -> str:
    """``url`` without query string, fragment or user info, safe to show."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain or Windows-drive path
        return url.split("?", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _flag(value: Any) -> bool:
    """A boolean option that may come from a command line as text ("false" is False)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("", "0", "false", "no", "off"):
            return False
        raise FastdataConfigError(f"allow_insecure must be true or false, got {value!r}")
    return bool(value)


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
        self.allow_insecure = self.conditional_reads = False
        self._query = ""  # a SAS query added to every object URL (http/https), never shown
        if self.local:
            self._root = url[len("file://"):] if url.startswith("file://") else url
            # (the fsspec filesystem or None for a local store, the pid that made it, url, options)
            self._fs_made: tuple[Any, int, str, dict[str, Any]] = (None, os.getpid(), url, {})
        else:
            import fsspec  # the one place fastdata touches fsspec

            options = dict(storage_options or {})
            self.allow_insecure = _flag(options.pop("allow_insecure", False)) or (
                environment.allow_insecure())
            self.url, options, self._query = split_query(self.url, options, self.display)
            self.display = redact(self.url)
            scheme = urlsplit(self.url).scheme.lower()
            endpoint = insecure_endpoint(scheme, self.url, options, environment.endpoints())
            if endpoint is not None and not self.allow_insecure:
                raise FastdataConfigError(
                    f"{self.display} would be read from {redact(endpoint)} over plain HTTP, unencrypted "
                    "(data and credentials readable on the wire); use an https endpoint, or pass "
                    "storage_options={'allow_insecure': True} (or FASTDATA_ALLOW_INSECURE=1) only for a "
                    "local emulator such as Azurite")
            self.conditional_reads = scheme in ("http", "https")
            options = with_defaults(scheme, options)
            try:
                fs, self._root = fsspec.core.url_to_fs(self.url, **options)
            except (ImportError, ValueError) as e:
                raise FastdataConfigError(f"cannot open {self.display}: {redact(str(e))}") from None
            self._root = self._root.rstrip("/")
            own_the_retries(fs)
            self._fs_made = (fs, os.getpid(), self.url, options)

    @property
    def _fs(self) -> Any:
        """The fsspec filesystem, made again in a forked child: async filesystems (adlfs, s3fs,
        http) refuse to run in a process other than the one that made them."""
        fs, pid, url, options = self._fs_made
        if fs is not None and pid != os.getpid():
            import fsspec

            fs = fsspec.core.url_to_fs(url, **options)[0]
            own_the_retries(fs)
            self._fs_made = (fs, os.getpid(), url, options)
        return fs

    def __repr__(self) -> str:
        return f"Store({self.display!r})"

    def path(self, name: str) -> str:
        """Local path (for local stores) or fsspec path of ``name`` under the root."""
        if self.local:
            return os.path.join(self._root, name)
        return f"{self._root}/{name}?{self._query}" if self._query else f"{self._root}/{name}"

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
                if self.conditional_reads:
                    return int(self._http("HEAD", name, {"Accept-Encoding": "identity"})[1]["Content-Length"])
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
        if self.conditional_reads:
            return self.read_range_tagged(name, start, end)[0]
        return bytes(self._fs.cat_file(self.path(name), start=start, end=end))

    def read_range_tagged(self, name: str, start: int, end: int, if_match: str | None = None,
                          whole: int | None = None) -> tuple[bytes, str | None]:
        """HTTP(S) only (``conditional_reads``): bytes ``[start, end)`` of ``name`` and the ETag
        of the version they came from, in one GET.

        A server that ignores ``Range`` answers 200 with the whole object: only what is needed
        is read off the socket (``end`` bytes), or, when the caller gives the object's size as
        ``whole`` and asked from byte 0, the whole object (up to ``whole`` + 1 bytes) so that
        one response serves every range (the returned bytes are then longer than the range).

        Raises:
            ObjectChangedError: ``if_match`` is not the object's ETag any more (412).
            FastdataIntegrityError: the server answered with another range than the one asked.
        """
        if not self.conditional_reads:
            raise FastdataConfigError(f"{self.display}: conditional ranged reads need an http(s) store")
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if if_match is not None:
            headers["If-Match"] = if_match
        keep = whole + 1 if whole is not None and start == 0 else end
        status, got, body = self._http("GET", name, headers, keep_if_whole=keep)
        if status == 200:  # the server ignored Range and sent the whole object
            return (body if keep != end else body[start:end]), got.get("ETag")
        sent = got.get("Content-Range", "")
        if not sent.startswith(f"bytes {start}-{end - 1}/"):
            raise FastdataIntegrityError(
                f"{self.describe(name)}: asked for bytes {start}-{end - 1}, the server sent "
                f"Content-Range {sent!r} ({len(body)} bytes)")
        return body, got.get("ETag")

    def _http(self, method: str, name: str, headers: Mapping[str, str],
              keep_if_whole: int | None = None) -> tuple[int, Mapping[str, str], bytes]:
        """One request through the fsspec HTTP filesystem's session: status, headers, body
        (of a 200 answer, at most ``keep_if_whole`` bytes are read; the rest is never fetched).

        fsspec's own ``cat_file`` hides the status and headers that ranged reads must check
        (206, Content-Range, ETag), and its ``info`` turns a 503 into FileNotFoundError.
        """
        import fsspec.asyn

        fs, url = self._fs, self.path(name)

        async def request() -> tuple[int, Mapping[str, str], bytes]:
            session = await fs.set_session()
            options = dict(fs.kwargs)
            options["headers"] = {**options.get("headers", {}), **headers}
            async with session.request(method, fs.encode_url(url), **options) as r:
                if r.status == 404:
                    raise FileNotFoundError(errno.ENOENT, "no such object", self.describe(name))
                if r.status == 416:  # no byte of the range exists: the object is shorter than expected
                    raise FastdataIntegrityError(
                        f"{self.describe(name)}: {headers.get('Range')} is past its end (Content-Range "
                        f"{r.headers.get('Content-Range')!r}): the object is shorter than the manifest says")
                if r.status == 412:
                    raise ObjectChangedError(
                        f"{self.describe(name)} changed during the download (412 to If-Match "
                        f"{headers.get('If-Match')}; now {r.headers.get('ETag')})")
                r.raise_for_status()
                if r.status == 200 and keep_if_whole is not None:
                    body = bytearray()
                    while len(body) < keep_if_whole and (chunk := await r.content.read(
                            min(1 << 20, keep_if_whole - len(body)))):
                        body += chunk
                    r.close()  # drop the connection instead of reading the rest of the object
                    return r.status, r.headers.copy(), bytes(body)
                return r.status, r.headers.copy(), await r.read()

        return fsspec.asyn.sync(fs.loop, request)

    def etag(self, name: str) -> str | None:
        """The object's ETag (None for local files or backends without one)."""
        if self.local:
            return None
        if self.conditional_reads:
            return self._http("HEAD", name, {"Accept-Encoding": "identity"})[1].get("ETag")
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
        """Upload the finished local file ``local_file`` as ``name``: one upload, since object
        stores make an object visible only when its upload completes.

        Remote stores only: every writer (``pack/shards.py``, ``pack/ray_tasks.py``,
        ``megatron/convert.py``) writes a local store's files in place at :meth:`path`.

        Raises:
            FastdataError: the store is local.
            FastdataIOError: the upload failed.
        """
        if self.local:
            raise FastdataError(f"{self.describe(name)}: a local store's files are written in place at "
                                "Store.path(name), never published")
        with self._guard("publishing", name):
            self._fs.put_file(local_file, self.path(name))

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
