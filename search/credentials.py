"""Passwords in tracking URIs: taken out at the door, handed to the client library, never written down.

A ``postgresql://USER:PW@HOST/DB`` URI would otherwise travel into ``runs/NAME/search.json``, Tune's
pickled callbacks (``tuner.pkl``), MLflow tags and the lines a search prints. The password moves to
the variable its client library reads at connect time (libpq: ``PGPASSWORD``; MLflow's HTTP client:
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) and the URI goes on without it. Set those variables (or
keep the password in ``~/.pgpass`` / ``$PGPASSFILE``, mode 0600) and no URI needs a password at all.
Stdlib only: the CLI's preflight checks use it before anything heavy is imported.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import SearchError

# Scheme family -> the variables its client library reads the user name and password from.
PASSWORD_VARIABLES = {
    "postgresql": (None, "PGPASSWORD"),  # libpq (psycopg2, psycopg); the user name stays in the URI
    "postgres": (None, "PGPASSWORD"),
    "http": ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),  # MLflow's REST client (basic auth)
    "https": ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
}
HIDDEN = "***"


def _scheme(uri: str) -> str:
    return urlsplit(uri).scheme.lower().split("+", 1)[0]


def password_of(uri: str) -> str | None:
    try:
        password = urlsplit(uri).password
    except ValueError:
        return None
    return unquote(password) if password is not None else None


def _with_password(uri: str):
    """The URI's parts when it holds a password (else None), and its host part after the credentials."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return None, ""
    except ValueError:
        return None, ""
    return parts, parts.netloc.rsplit("@", 1)[1]


def without_password(uri: str) -> str:
    """The URI as it may be written down and printed: no password (for HTTP, no user name either)."""
    parts, host = _with_password(uri)
    if parts is None:
        return uri
    user = "" if _scheme(uri) in ("http", "https") else f"{parts.username}@"
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


def redacted(uri: str) -> str:
    """The URI for a message: its password replaced by ``***``."""
    parts, host = _with_password(uri)
    if parts is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{HIDDEN}@{host}"))


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` (an exception's message) with every given secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, HIDDEN)
    return text


def password_variable(uri: str) -> str:
    """Where the password for ``uri`` belongs instead of the URI."""
    variables = PASSWORD_VARIABLES.get(_scheme(uri))
    return f"${variables[1]}" + (" (or use ~/.pgpass)" if variables[0] is None else "") if variables else \
        "the database driver's own configuration"


def adopt_password(uri: str, what: str = "--tracking-uri", environ: dict | None = None) -> str:
    """Move a password out of ``uri`` into the variable its client library reads; return the URI without it.

    A variable already set to another password is a conflict: say so rather than pick one.
    """
    environ = os.environ if environ is None else environ
    password = password_of(uri)
    if password is None:
        return uri
    scheme = _scheme(uri)
    if scheme not in PASSWORD_VARIABLES:
        raise SearchError(f"{what}: {redacted(uri)} holds a password, which would be written into files and logs; "
                          "keep it in the database driver's own configuration instead (MySQL: an option file, "
                          "?read_default_file=~/.my.cnf)")
    user_var, password_var = PASSWORD_VARIABLES[scheme]
    if environ.get(password_var, password) != password:
        raise SearchError(f"{what}: {redacted(uri)} holds a password and ${password_var} holds another; "
                          f"drop the one in the URI")
    environ[password_var] = password
    if user_var:
        environ[user_var] = unquote(urlsplit(uri).username or "")
    return without_password(uri)
