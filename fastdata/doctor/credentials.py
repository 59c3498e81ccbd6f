"""Credentials: where the checks find them (by name) and scrubbing their values from details."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from urllib.parse import unquote, urlsplit

from fastdata.doctor.report import Check, DoctorOptions
from fastdata.storage.remote import redact

#: Storage options and environment variables that hold credentials: named, never shown.
SECRET_WORDS = ("key", "secret", "token", "sas", "signature", "credential", "password", "connection")
CREDENTIAL_ENV = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
                  "AZURE_STORAGE_CLIENT_SECRET", "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_ACCOUNT_NAME",
                  "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                  "GOOGLE_APPLICATION_CREDENTIALS")


def _is_secret_name(name: str) -> bool:
    return any(word in name.lower() for word in SECRET_WORDS)


def credential_sources(options: DoctorOptions) -> list[str]:
    """Where credentials come from, by name only: ``storage option account_key``, ``$AZURE_...``."""
    found = [f"storage option {k}" for k in sorted(options.storage_options) if _is_secret_name(k)]
    return found + [f"${name}" for name in CREDENTIAL_ENV if options.env.get(name)]


def _secret_values(options: DoctorOptions) -> set[str]:
    values = {str(v) for k, v in options.storage_options.items() if _is_secret_name(k)}
    values |= {options.env[n] for n in CREDENTIAL_ENV if options.env.get(n) and _is_secret_name(n)}
    if options.url:
        values.add(urlsplit(options.url).query)
    parts = set()
    for value in values:  # connection strings (k=v;k=v) and SAS tokens (k=v&k=v): their secret parts too
        for piece in value.lstrip("?").replace("&", ";").split(";"):
            key, _, part = piece.partition("=")
            if key.strip().lower() == "sig" or _is_secret_name(key):
                parts |= {part, unquote(part)}
    return {v for v in values | parts if len(v) >= 6}


def scrubber(options: DoctorOptions) -> Callable[[Check], Check]:
    """A function that replaces every credential value of ``options`` in a check by ``<redacted>``."""
    secret = sorted(_secret_values(options), key=len, reverse=True)

    def clean(text: str) -> str:
        for value in secret:
            text = text.replace(value, "<redacted>")
        return text

    def scrub(check: Check) -> Check:
        values = {k: clean(v) if isinstance(v, str) else v for k, v in check.values.items()}
        return replace(check, detail=clean(check.detail), values=values)

    return scrub


def describe(error: BaseException) -> str:
    """``Type: first line`` of ``error``, query strings removed."""
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {redact(text)}" if text else type(error).__name__

