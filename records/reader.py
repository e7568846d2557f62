"""Reading a tracking store without importing MLflow: the runs, tags, params, metrics and artifacts a
read command needs, in the shape MLflow's own ``Run`` has (``run.info.run_id``, ``run.data.tags``).

``import mlflow`` costs about a second (its package init pulls its GenAI stack, FastAPI and more), ten times
what ``search ls`` may spend (issue 17 §5). The stores a search writes to are read directly instead: a SQL
store with its own driver (``sql_reader``), a tracking server over its REST API (``rest_reader``), run
folders on a local disk here. Every other store (a file store ``./mlruns``, Databricks) and every other
artifact location (``s3:``, ``gs:``) is read through ``ClientReader``, an ``MlflowClient``: correct, only
slower. It is the one place the reader imports MLflow. Writers keep ``MlflowClient`` (``records.writer``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

ACTIVE = "active"  # MLflow's lifecycle stage of a run or experiment that is not deleted
TEMP_ARTIFACT_PREFIX = ".artifact.uploading."  # a local artifact MLflow is still writing (not listed)
MAX_PAGE = 50000  # the most runs one ``search_runs`` call returns (MLflow's SEARCH_MAX_RESULTS_THRESHOLD)


class StoreError(LookupError):
    """The store did not answer a read (not an MLflow store, a server's error): the message says which and why."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str = ACTIVE


@dataclass(frozen=True)
class RunData:
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # each metric's latest value, as MLflow keeps it


@dataclass(frozen=True)
class Run:
    info: RunInfo
    data: RunData


@dataclass(frozen=True)
class MetricPoint:
    """One logged value of a metric's history."""

    key: str
    value: float
    timestamp: int
    step: int


def tag_filter(tags: dict[str, str]) -> str:
    """MLflow's filter string for runs whose tags hold exactly these values."""
    def quoted(value: str) -> str:
        if "'" in value and '"' in value:
            raise ValueError(f"a tag value with both quote characters cannot be searched: {value!r}")
        return f'"{value}"' if "'" in value else f"'{value}'"

    return " and ".join(f"tags.`{k}` = {quoted(v)}" for k, v in tags.items())


class Reader:
    """What the record layer reads from a store. Runs come newest first, as ``MlflowClient.search_runs`` gives
    them by default (start time descending, then run id), deleted runs and experiments left out."""

    uri: str

    def runs_tagged(self, tags: dict[str, str], *, experiment_id: str | None = None,
                    max_results: int | None = None) -> list:
        raise NotImplementedError

    def get_run(self, run_id: str):
        raise NotImplementedError

    def metric_history(self, run_id: str, key: str) -> list:
        """Every logged value of ``key`` (objects with ``step``, ``value``, ``timestamp``)."""
        raise NotImplementedError

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """The artifact paths directly under ``path`` (relative to the run's root, as MLflow names them)."""
        raise NotImplementedError

    def download_artifact(self, run_id: str, path: str, dst: str | Path) -> Path:
        """Copy one artifact (a file or a folder) under ``dst``; its local path."""
        raise NotImplementedError


def local_artifact_root(artifact_uri: str) -> Path | None:
    """The folder of a run's artifacts when they lie on this machine's disk (a path or ``file://``), else None."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and artifact_uri[1:3] in (":\\", ":/")):  # a Windows drive
        return Path(artifact_uri)
    return None


def _inside(root: Path, path: str | None) -> Path:
    target = (root / path).resolve() if path else root.resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise ValueError(f"artifact path {path!r} leaves the run's artifact folder")
    return target


def list_local(root: Path, path: str | None) -> list[str]:
    """``LocalArtifactRepository.list_artifacts``: the entries of a folder, sorted by path (none for a file)."""
    folder = _inside(root, path)
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(root.resolve()).as_posix() for p in folder.iterdir()
                  if not p.name.startswith(TEMP_ARTIFACT_PREFIX))


def copy_local(root: Path, path: str, dst: str | Path) -> Path:
    source, target = _inside(root, path), Path(dst) / path
    if not source.exists():
        raise FileNotFoundError(f"no artifact {path!r} in {root}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, target)
    return target


class ClientReader(Reader):
    """The reader over an ``MlflowClient``: any store and any artifact location MLflow knows, at MLflow's
    import cost. ``as_reader`` wraps a client a caller already has; ``for_uri`` makes one."""

    def __init__(self, client):
        self.client = client
        self.uri = client.tracking_uri

    @classmethod
    def for_uri(cls, uri: str) -> "ClientReader":
        from mlflow.tracking import MlflowClient  # only the stores the direct readers do not know pay for MLflow

        return cls(MlflowClient(tracking_uri=uri))

    def runs_tagged(self, tags, *, experiment_id=None, max_results=None):
        if experiment_id is not None:
            experiments = [experiment_id]
        else:
            experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return []
        runs, token, page_size = [], None, min(max_results or MAX_PAGE, MAX_PAGE)
        while True:
            page = self.client.search_runs(experiments, filter_string=tag_filter(tags), max_results=page_size,
                                           order_by=["attributes.start_time DESC"], page_token=token)
            runs += list(page)
            token = page.token
            if not token or (max_results and len(runs) >= max_results):
                return runs[:max_results] if max_results else runs

    def get_run(self, run_id):
        return self.client.get_run(run_id)

    def metric_history(self, run_id, key):
        return self.client.get_metric_history(run_id, key)

    def list_artifacts(self, run_id, path=None):
        return [a.path for a in self.client.list_artifacts(run_id, path)]

    def download_artifact(self, run_id, path, dst):
        return Path(self.client.download_artifacts(run_id, path, str(dst)))


class ArtifactsOnDisk:
    """Artifacts of runs whose ``artifact_uri`` is on this disk, read directly; any other location through
    ``fallback`` (a ``ClientReader`` made when first needed)."""

    def __init__(self, uri: str):
        self._fallback_uri, self._fallback = uri, None

    def fallback(self) -> ClientReader:
        if self._fallback is None:
            self._fallback = ClientReader.for_uri(self._fallback_uri)
        return self._fallback

    def artifact_uri(self, run_id: str) -> str:
        return self.get_run(run_id).info.artifact_uri

    def artifact_root(self, run_id: str) -> Path | None:
        return local_artifact_root(self.artifact_uri(run_id))

    def list_artifacts(self, run_id, path=None):
        root = self.artifact_root(run_id)
        return list_local(root, path) if root is not None else self.fallback().list_artifacts(run_id, path)

    def download_artifact(self, run_id, path, dst):
        root = self.artifact_root(run_id)
        return copy_local(root, path, dst) if root is not None else self.fallback().download_artifact(run_id, path, dst)


def as_reader(source) -> Reader:
    """A reader from what a caller holds: a reader as it is, an ``MlflowClient`` wrapped."""
    return source if isinstance(source, Reader) else ClientReader(source)
