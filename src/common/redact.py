"""Secrets never leave the process: URIs without their passwords, and any text (an error, a
traceback, a library's log line) without the secrets this process was given.

A team's credentials arrive in environment variables: a password inside MLFLOW_TRACKING_URI or
OPTUNA_STORAGE (both accepted by their clients), MLFLOW_TRACKING_PASSWORD, the S3 secret key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

HIDDEN = "***"
# Query parameters that carry a secret: libpq takes ?password= (and sslpassword=) in a URL.
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword", "token", "access_token", "secret"})
# Variables that hold a secret as their whole value.
SECRET_VARIABLES = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PGPASSWORD",
)
# Variables that hold a URL, perhaps with a password in it.
URL_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "OPTUNA_STORAGE", "DATABASE_URL")
# scheme://user:password@ in free text; the password ends at the last @ before the host.
USERINFO = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^\s:/@]*:)(?P<password>[^\s/]*)@")
SECRET_PARAM = re.compile(
    rf"(?P<head>[?&](?:{'|'.join(sorted(SECRET_QUERY_KEYS))})=)(?P<value>[^&\s#]+)", re.IGNORECASE
)
# Shorter values are not worth hiding (and hiding them would mangle ordinary text).
MIN_SECRET_LEN = 4


def uri(text: str) -> str:
    """The URI without its password: postgresql://user:***@host/db?sslpassword=***. Edited in
    place, not rebuilt, so the rest reads as given (urlunsplit would drop sqlite:////'s slashes)."""
    parts = urlsplit(text)
    shown = text
    if parts.password is not None:
        hidden = parts.netloc.replace(f":{parts.password}@", f":{HIDDEN}@", 1)
        shown = shown.replace(parts.netloc, hidden, 1)
    if parts.query:
        pairs = [
            f"{key}={HIDDEN}" if unquote(key).lower() in SECRET_QUERY_KEYS else pair
            for pair in parts.query.split("&")
            for key in [pair.partition("=")[0]]
        ]
        shown = shown.replace(f"?{parts.query}", f"?{'&'.join(pairs)}", 1)
    return shown


def has_secret(text: str) -> bool:
    """Whether the URI carries a password (in its userinfo or its query)."""
    return uri(text) != text


def text(message: str, secrets: Sequence[str] | None = None) -> str:
    """`message` with every URL's password and every secret this process was given (or
    `secrets`, as `known_secrets` found them earlier) hidden."""
    hidden = USERINFO.sub(lambda m: f"{m['head']}{HIDDEN}@", message)
    hidden = SECRET_PARAM.sub(lambda m: f"{m['head']}{HIDDEN}", hidden)
    for secret in known_secrets() if secrets is None else secrets:
        hidden = hidden.replace(secret, HIDDEN)
    return hidden


def known_secrets() -> list[str]:
    """The secrets in this process's environment, longest first (one may contain another)."""
    found = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    for name in URL_VARIABLES:
        parts = urlsplit(os.environ.get(name, ""))
        found.add(parts.password or "")
        if parts.password:
            found.add(unquote(parts.password))
    return sorted((s for s in found if len(s) >= MIN_SECRET_LEN), key=len, reverse=True)
