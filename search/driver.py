"""What a search needs to outlive its driver and its working directory.

Under ``ray job submit --working-dir .`` the job runs in a temporary copy of the project, so nothing
resume needs may live only in ``runs/``. The search's metadata and frozen study are also written to
the ``--storage`` location (beside Ray Tune's state; a local path, a shared mount or a cloud URI) and to
the MLflow parent run. The driver's heartbeat on the parent run lets ``ls``/``show``/``resume`` tell a
running search from one whose driver died (SIGKILL, lost head node).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from records import schema
from records.reader import as_reader
from records.states import Outcome, SearchState

from .credentials import without_password
from .errors import SearchError

META_FILE, STUDY_FILE = "search.json", "study.yaml"
META_TAG = "rs.meta"  # the SearchMeta fields as JSON, on the parent run
HEARTBEAT = "rs.heartbeat"  # unix seconds, refreshed by the driver (search.callbacks.MlflowTrialLogger)
DRIVER, DRIVER_SINCE = "rs.driver", "rs.driver_since"  # "pid N on HOST", and unix seconds since it drives
DRIVER_TAGS = (DRIVER, DRIVER_SINCE, HEARTBEAT)  # the parent's alone: trial runs do not inherit them
HEARTBEAT_EVERY_S = 30.0
LOST_AFTER_S = 150.0  # five missed heartbeats: the driver is gone


# ------------------------------------------------------------------ storage (local path or URI)
def _fs(location: str):
    """A pyarrow filesystem and path for a local folder or a URI (s3://, gs://), as Ray Tune resolves them."""
    import pyarrow.fs

    if "://" not in location:
        return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())
    return pyarrow.fs.FileSystem.from_uri(location)


def shareable(meta: dict) -> dict:
    return {**meta, "tracking_uri": without_password(meta["tracking_uri"])}


def write_to_storage(storage: str, name: str, meta: dict, study_file: Path) -> None:
    meta, study = shareable(meta), Path(study_file).read_bytes()
    fs, root = _fs(storage)
    folder = f"{root.rstrip('/')}/{name}"
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(f"{folder}/{META_FILE}") as f:
        f.write(json.dumps(meta, indent=2).encode())
    with fs.open_output_stream(f"{folder}/{STUDY_FILE}") as f:
        f.write(study)


def _read(storage: str, name: str, file: str) -> bytes | None:
    import pyarrow.fs

    try:
        fs, root = _fs(storage)
        path = f"{root.rstrip('/')}/{name}/{file}"
        if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()
    except (OSError, ValueError):
        return None


def read_from_storage(storage: str, name: str) -> tuple[dict, bytes] | None:
    meta, study = _read(storage, name, META_FILE), _read(storage, name, STUDY_FILE)
    return (json.loads(meta), study) if meta and study else None


# ------------------------------------------------------------------ the MLflow parent run
def write_to_parent(client, parent_run_id: str, meta: dict) -> None:
    client.set_tag(parent_run_id, META_TAG, json.dumps(shareable(meta)))
    client.set_tag(parent_run_id, "rs.storage", meta["storage"])


def read_from_parent(reader, name: str) -> tuple[dict, bytes] | None:
    """The metadata tag and the study file logged at the start (artifact ``study/``) of the search's parent run;
    ``reader``: a ``records.reader.Reader`` or an ``MlflowClient``."""
    reader = as_reader(reader)
    parent = schema.find_parent(reader, name)
    if parent is None or META_TAG not in parent.data.tags:
        return None
    meta = json.loads(parent.data.tags[META_TAG])
    study = _read(meta["storage"], name, STUDY_FILE)
    if study:
        return meta, study
    files = reader.list_artifacts(parent.info.run_id, "study")
    if not files:
        return None
    with tempfile.TemporaryDirectory() as d:
        return meta, reader.download_artifact(parent.info.run_id, sorted(files)[0], d).read_bytes()


def find_search(name: str, *, runs: Path, storage: str | None, tracking_uri: str | None) -> tuple[dict, bytes]:
    """The search's metadata and frozen study: from runs/NAME, else --storage, else the MLflow parent run.

    Found elsewhere than runs/NAME, the tracking URI is this process's (--tracking-uri or $MLFLOW_TRACKING_URI):
    the recorded one has no password and may name the server as the first driver saw it.
    """
    local = runs / name / META_FILE
    if local.is_file():
        meta = json.loads(local.read_text())
        return meta, Path(meta["study_path"]).read_bytes()
    chosen = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    found = read_from_storage(storage, name) if storage else None
    if not found:
        try:  # a sqlite store that does not exist holds no search (and is not created by looking)
            found = read_from_parent(schema.reader_for(chosen), name)
        except schema.StoreNotFound:
            found = None
    if found:
        meta = found[0]
        return {**meta, "tracking_uri": schema.tracking_uri(chosen or meta["tracking_uri"])}, found[1]
    where = f"{runs}/" + (f", {storage}" if storage else "") + f" or the MLflow store {schema.tracking_uri(tracking_uri)}"
    raise SearchError(f"no search named '{name}' in {where} (`search ls` lists the searches; pass --storage or "
                      "--tracking-uri where it ran)")


# ------------------------------------------------------------------ one driver per search name
def claim_folder(folder: Path, name: str) -> Path:
    """Create runs/NAME, atomically: of two drivers started with one name in one runs folder, one gets it."""
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise SearchError(f"a search named '{name}' already exists in {folder.parent}/: choose another --name, "
                          f"or continue it with `search resume {name}`") from None
    return folder


def check_name_free(client, name: str, uri: str) -> None:
    """No parent run of that name in the store (another checkout's search, or one whose runs/ is gone)."""
    taken = schema.find_parent(client, name)
    if taken is not None:
        raise SearchError(f"a search named '{name}' already exists in MLflow at {without_password(uri)} "
                          f"({state_of(taken)}; {describe_driver(taken)}): choose another --name, or continue it with "
                          f"`search resume {name}`")


def claim_parent(client, name: str, parent_run_id: str, uri: str) -> None:
    """Keep our new parent run only if it is the oldest of that name; otherwise delete it and refuse.

    MLflow has no create-if-absent: two drivers that both passed ``check_name_free`` each create a run,
    then each looks; both see the same oldest run, so exactly one keeps its run.
    """
    runs = schema.parents_named(client, name)
    first = min(runs, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
    if first is not None and first.info.run_id != parent_run_id:
        client.delete_run(parent_run_id)
        raise SearchError(f"a search named '{name}' was started at the same time in MLflow at "
                          f"{without_password(uri)} ({describe_driver(first)}): choose another --name")


def driver_tags(now: float | None = None) -> dict[str, str]:
    """Who drives the search and since when (on the parent run, with the first heartbeat)."""
    now = int(now or time.time())
    return {DRIVER: f"pid {os.getpid()} on {socket.gethostname()}", DRIVER_SINCE: str(now), HEARTBEAT: str(now)}


def describe_driver(parent) -> str:
    tags = parent.data.tags
    since = float(tags.get(DRIVER_SINCE) or parent.info.start_time / 1000)
    return f"driver {tags.get(DRIVER, 'unknown')} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"


def state_of(parent) -> str:
    return parent.data.tags.get(schema.STATE, parent.info.status.lower())


def take_over(client, parent_run_id: str) -> None:
    """This driver continues the search: running again, its own driver tags and a fresh heartbeat."""
    client.set_tag(parent_run_id, schema.STATE, SearchState.RUNNING.value)
    for key, value in driver_tags().items():
        client.set_tag(parent_run_id, key, value)


def parent_of(client, name: str, parent_run_id: str, uri: str):
    """The search's parent run in this store; a store that does not hold it is the user's to fix."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(parent_run_id)
    except MlflowException:
        raise SearchError(f"search '{name}': its parent run {parent_run_id} is not in MLflow at "
                          f"{without_password(uri)}; pass --tracking-uri where it ran") from None


def refuse_if_live(parent, now: float | None = None) -> None:
    """A search whose driver still beats is not resumed: a second driver would run its trials twice."""
    if parent.data.tags.get(schema.STATE) != SearchState.RUNNING or driver_lost(parent, now):
        return
    age = (now or time.time()) - last_heartbeat(parent)
    raise SearchError(f"search '{parent.data.tags.get(schema.SEARCH, parent.info.run_name)}' is running "
                      f"({describe_driver(parent)}; last heartbeat {age:.0f} s ago): a resume takes over only "
                      f"after {LOST_AFTER_S:.0f} s without a heartbeat (in {LOST_AFTER_S - age:.0f} s if that driver "
                      "is gone); stop it first")


# ------------------------------------------------------------------ liveness
def heartbeat(client, parent_run_id: str) -> None:
    client.set_tag(parent_run_id, HEARTBEAT, str(int(time.time())))


def last_heartbeat(parent) -> float:
    """Unix seconds of the driver's last heartbeat (the run's start for a search from before heartbeats)."""
    return float(parent.data.tags.get(HEARTBEAT) or parent.info.start_time / 1000)


def driver_lost(parent, now: float | None = None) -> bool:
    """A search still tagged running whose driver has not written a heartbeat for LOST_AFTER_S."""
    tags = parent.data.tags
    if tags.get(schema.STATE) != SearchState.RUNNING:
        return False
    return (now or time.time()) - last_heartbeat(parent) > LOST_AFTER_S


def mark_children_interrupted(client, parent) -> int:
    """Trial runs left RUNNING by a driver that stopped: tagged interrupted, ended KILLED. Returns how many."""
    n = 0
    for child in schema.child_runs(client, parent):
        if child.info.status == "RUNNING" or child.data.tags.get(schema.STATE) == Outcome.RUNNING:
            client.set_tag(child.info.run_id, schema.STATE, Outcome.INTERRUPTED.value)
            client.set_terminated(child.info.run_id, "KILLED")
            n += 1
    return n


def settle_stale(client, parent) -> str:
    """Mark a search whose driver is gone as "driver lost" (and its running trials interrupted); its state."""
    if driver_lost(parent):
        client.set_tag(parent.info.run_id, schema.STATE, SearchState.DRIVER_LOST.value)
        client.set_terminated(parent.info.run_id, "KILLED")
        mark_children_interrupted(client, parent)
        return SearchState.DRIVER_LOST.value
    return parent.data.tags.get(schema.STATE, parent.info.status.lower())


@dataclass
class SearchMeta:
    """What a search needs to be resumed or exported, kept beside Ray's experiment state."""

    name: str
    study_path: str
    tracking_uri: str
    parent_run_id: str
    sampler: str
    num_samples: int
    max_concurrent: int | None
    storage: str  # Ray Tune's storage_path: a local folder, a shared mount or a cloud URI (s3://, gs://)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / META_FILE).write_text(json.dumps(shareable(asdict(self)), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "SearchMeta":
        return cls(**json.loads((folder / META_FILE).read_text()))
