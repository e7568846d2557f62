"""Checks at the doors: everything a search needs from the outside, checked before Ray starts.

Each check raises ``SearchError`` with one line naming the option (or key) at fault, so bad input
costs the user a second, leaves nothing behind (no runs folder, no MLflow parent run) and never a
traceback. Shared by the CLI (as argparse types) and the library (``start_search``'s preflight).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from .credentials import password_of, redacted, scrub
from .errors import SearchError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
MAX_NAME = 128
# MLflow stores we can reach: a database through SQLAlchemy, a tracking server, a local folder.
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SERVER_SCHEMES = ("http", "https", "databricks")
CONNECT_TIMEOUT_S = 5  # a store that has not answered by then will not: say so (MLflow would retry for minutes)


def check_search_name(name: str, what: str = "search name") -> str:
    """A search name becomes a folder and an MLflow tag: letters, digits, '_', '.', '-' only."""
    if not name:
        raise SearchError(f"{what}: empty; give a name such as my-search-1")
    if len(name) > MAX_NAME:
        raise SearchError(f"{what}: {len(name)} characters is too long (at most {MAX_NAME})")
    if not NAME_PATTERN.match(name) or ".." in name:
        raise SearchError(f"{what} {name!r}: use letters, digits, '_', '.' and '-' only (no '/', '..', spaces "
                          "or quotes), starting with a letter, digit or '_'")
    return name


def check_tracking_uri(uri: str, what: str = "--tracking-uri", *, writable: bool = False) -> str:
    """A tracking URI MLflow can open: ``sqlite:///file.db``, ``postgresql://host/db``, ``http(s)://host``, ``file:``.

    ``writable``: the store will be written (a search): a sqlite file's folder must exist and be writable.
    """
    text, shown = uri.strip(), redacted(uri.strip())
    if not text or any(c in text for c in "\n\r\t\0"):
        raise SearchError(f"{what}: {shown!r} is not a tracking URI")
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    base = scheme.split("+", 1)[0]  # postgresql+psycopg2, mysql+pymysql, ...
    hint = "use sqlite:///mlflow.db, postgresql://USER@HOST/DB, http://HOST:PORT or file:/path/mlruns"
    if not scheme or len(scheme) == 1:  # a bare path (or a Windows drive letter)
        raise SearchError(f"{what}: {shown!r} has no scheme; {hint}")
    if base not in DB_SCHEMES + SERVER_SCHEMES + ("file",):
        raise SearchError(f"{what}: unsupported scheme '{scheme}://' in {shown!r}; {hint}")
    if base == "sqlite":
        if not text.lower().startswith("sqlite:///") or len(text) == len("sqlite:///"):
            raise SearchError(f"{what}: {shown!r} names no database file; write sqlite:///relative.db or "
                              "sqlite:////absolute/path.db")
        path = Path(text[len("sqlite:///"):].split("?", 1)[0])
        if path.is_dir():
            raise SearchError(f"{what}: {path} is a directory, not a database file")
        if path.is_file() and path.stat().st_size and not _is_sqlite(path):
            raise SearchError(f"{what}: {path} is not an SQLite database")
        if writable:
            folder = path.parent if str(path.parent) else Path(".")
            _check_writable_folder(folder, what)
            if not folder.is_dir():
                raise SearchError(f"{what}: the folder {folder} of the database does not exist; create it first")
    elif base == "file":
        path = Path(parsed.path or "")
        if not parsed.path:
            raise SearchError(f"{what}: {shown!r} names no folder; write file:/path/to/mlruns")
        if path.exists() and not path.is_dir():
            raise SearchError(f"{what}: {path} is a file, not a folder")
    elif not parsed.hostname:
        raise SearchError(f"{what}: {shown!r} names no host; {hint}")
    else:
        try:
            parsed.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise SearchError(f"{what}: {shown!r} has an invalid port") from None
    return text


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _check_writable_folder(path: Path, what: str) -> None:
    """``path`` (need not exist yet) can be created as a folder and written: every existing ancestor is a folder."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise SearchError(f"{what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SearchError(f"{what}: {probe} is not writable")


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """A file we will write: not a folder, in a writable folder that exists."""
    path = Path(path)
    if path.is_dir():
        raise SearchError(f"{what}: {path} is a directory; give a file name such as best.yaml")
    folder = path.parent if str(path.parent) else Path(".")
    _check_writable_folder(folder, what)
    if not folder.is_dir():
        raise SearchError(f"{what}: the folder {folder} does not exist")
    return path


def check_runs_dir(path: str | Path, what: str = "--runs-dir") -> Path:
    """Where Ray keeps trial state: a writable folder (created if absent)."""
    path = Path(path)
    _check_writable_folder(path, what)
    return path


def check_study_datasets(base_config: dict, where: str = "dataset") -> str:
    """Load the study's dataset on the driver (cached there): absent or corrupt files fail here, once.

    Returns where the data came from (recorded as provenance).
    """
    from trainables.core.data import DATASETS, dataset_source

    name = base_config.get("dataset")
    if name not in DATASETS:
        return ""  # the study validator has already said so
    data_dir = base_config.get("data_dir") or os.environ.get("ROBUST_SEARCH_DATA")
    if data_dir and Path(data_dir).exists() and not Path(data_dir).is_dir():
        key = "fixed.data_dir" if base_config.get("data_dir") else "$ROBUST_SEARCH_DATA"
        raise SearchError(f"{key}: {data_dir} is a file, not a folder")
    if base_config.get("download") and data_dir:
        _check_writable_folder(Path(data_dir), "fixed.data_dir")
    source = dataset_source(name, base_config.get("data_dir"), bool(base_config.get("download")))
    check_target_datasets(base_config, name)
    return source


def check_target_datasets(base_config: dict, main: str) -> None:
    """The datasets behind ``eval_datasets`` and ``finetune_dataset`` (``mnist:rotate@3`` needs MNIST): each
    absent one fails here, named by its key, not in every trial at its first epoch."""
    from trainables.core.data import DatasetNotFound, dataset_source
    from trainables.core.domain_names import parse_name

    targets = [("eval_datasets", t) for t in base_config.get("eval_datasets") or ()]
    if base_config.get("finetune_dataset"):
        targets.append(("finetune_dataset", base_config["finetune_dataset"]))
    checked = {main}
    for key, target in targets:
        try:
            base = parse_name(target).dataset
        except ValueError:
            continue  # the study validator has already said so
        if base in checked:
            continue
        checked.add(base)
        try:
            dataset_source(base, base_config.get("data_dir"), bool(base_config.get("download")))
        except DatasetNotFound as e:
            raise type(e)(f"fixed.{key} ({target}): {e}") from None


def probe_store(uri: str, what: str = "--tracking-uri") -> None:
    """A database or tracking server that answers within CONNECT_TIMEOUT_S, and accepts our credentials.

    Before anything else: MLflow retries a refused password or an unreachable host for minutes and then
    prints a traceback that may echo the URI. SQLite and file stores are local and checked above.
    """
    scheme = urlparse(uri).scheme.lower().split("+", 1)[0]
    try:
        if scheme in ("postgresql", "postgres"):
            _probe_postgres(uri)
        elif scheme in ("http", "https"):
            _probe_server(uri)
    except (OSError, RuntimeError) as e:
        raise SearchError(f"{what}: cannot reach the MLflow store {redacted(uri)}: {first_line(e, uri)}") from None


def first_line(e: BaseException, uri: str) -> str:
    """The cause in one line, without the URI's password."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    return scrub(" ".join(lines[:2])[:300] or type(e).__name__, password_of(uri))


def _probe_postgres(uri: str) -> None:
    """libpq itself, with a connect timeout: it reads the password from the URI, $PGPASSWORD or ~/.pgpass.
    Without psycopg2 there is nothing to probe with (``records.schema.with_db_driver`` says so)."""
    from importlib.util import find_spec

    if find_spec("psycopg2") is None:
        return
    import psycopg2

    dsn = "postgresql://" + uri.split("://", 1)[1]  # libpq knows no SQLAlchemy driver suffix
    try:
        psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg2.OperationalError as e:
        text = str(e)
        if "password" in text and ("no password supplied" in text or "authentication failed" in text):
            hint = ("; set PGPASSWORD or keep it in ~/.pgpass (mode 0600)" if "no password" in text
                    else "; check PGPASSWORD, ~/.pgpass or the password in the URI")
            raise RuntimeError(first_line(e, uri) + hint) from None
        raise RuntimeError(text) from None


def _probe_server(uri: str) -> None:
    """One authenticated request to the server's REST API (MLflow's client would retry for minutes)."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise RuntimeError(f"HTTP {e.code}: the server refused our credentials; set MLFLOW_TRACKING_USERNAME "
                               "and MLFLOW_TRACKING_PASSWORD") from None
        return  # it answers: MLflow reports anything else itself
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise OSError(f"no answer within {CONNECT_TIMEOUT_S} s") from None
        raise OSError(getattr(e.reason, "strerror", None) or str(e.reason)) from None
    except TimeoutError:
        raise OSError(f"no answer within {CONNECT_TIMEOUT_S} s") from None


def open_store(uri: str, what: str = "--tracking-uri"):
    """An MLflow client whose store answers (a sqlite file that is no database fails here, not mid-search)."""
    from records import writer

    probe_store(uri, what)
    try:
        client = writer.client_for(uri)
        client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - MLflow and SQLAlchemy raise many types for an unusable store
        last = scrub((str(e).strip().splitlines() or [type(e).__name__])[-1][:300], password_of(uri))
        raise SearchError(f"{what}: cannot open the MLflow store {redacted(uri)} ({type(e).__name__}: {last})") from None
    return client


def check_address(address: str | None, what: str = "--address") -> None:
    """A Ray cluster address that answers: 'auto', 'local', HOST:PORT or ray://HOST:PORT.

    ``ray.init`` retries an address where nothing listens for minutes; a TCP connect says so in a second.
    """
    import socket

    if address is None or address in ("auto", "local"):
        return
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in text:
        raise SearchError(f"{what}: {address!r} is not a Ray address; use auto, HOST:PORT (the head's GCS port, "
                          "6379 by default) or ray://HOST:PORT (Ray client, 10001)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except OSError as e:
        raise SearchError(f"{what}: no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                          "`ray start --head` or check the address") from None
