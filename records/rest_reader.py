"""A tracking server (``http://``, ``https://``) read over MLflow's REST API with the standard library.

The calls ``MlflowClient`` makes for these reads (``runs/search`` page by page, ``metrics/get-history``,
``artifacts/list``) with the credentials it sends: basic auth from ``$MLFLOW_TRACKING_USERNAME`` /
``$MLFLOW_TRACKING_PASSWORD``, or a bearer ``$MLFLOW_TRACKING_TOKEN``; its TLS settings
(``$MLFLOW_TRACKING_INSECURE_TLS``, ``$MLFLOW_TRACKING_SERVER_CERT_PATH``; with a client certificate,
``$MLFLOW_TRACKING_CLIENT_CERT_PATH``, ``records.schema.reader_for`` reads through MLflow's client).
Artifacts the server proxies (``mlflow-artifacts:``) come from its artifact endpoint; run folders on
this disk are read directly.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

from .reader import ACTIVE, MAX_PAGE, ArtifactsOnDisk, MetricPoint, Reader, Run, RunData, RunInfo, StoreError, tag_filter

TIMEOUT_S = 30
PROXIED = "mlflow-artifacts"


def auth_header(environ=os.environ) -> dict[str, str]:
    """The ``Authorization`` header MLflow's REST client sends for these variables."""
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.standard_b64encode(f"{user}:{password}".encode()).decode()}
    if environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {environ['MLFLOW_TRACKING_TOKEN']}"}
    return {}


def tls_context(environ=os.environ) -> ssl.SSLContext | None:
    """MLflow's TLS settings: ``$MLFLOW_TRACKING_INSECURE_TLS`` (no verification) or a CA bundle in
    ``$MLFLOW_TRACKING_SERVER_CERT_PATH``; None: the system's defaults."""
    if environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()
    if environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        return ssl.create_default_context(cafile=environ["MLFLOW_TRACKING_SERVER_CERT_PATH"])
    return None


def _number(value) -> float:
    return float(value)  # the JSON of a NaN or infinite metric is the string "NaN" / "Infinity"


def _run(doc: dict) -> Run:
    info, data = doc["info"], doc.get("data", {})
    start, end = info.get("start_time"), info.get("end_time")
    return Run(RunInfo(info["run_id"], str(info["experiment_id"]), info.get("run_name", ""), info.get("status", ""),
                       int(start) if start is not None else None, int(end) if end is not None else None,
                       info.get("artifact_uri", ""), info.get("lifecycle_stage", ACTIVE)),
               RunData({t["key"]: t.get("value", "") for t in data.get("tags", [])},
                       {p["key"]: p.get("value", "") for p in data.get("params", [])},
                       {m["key"]: _number(m["value"]) for m in data.get("metrics", [])}))


class RestReader(ArtifactsOnDisk, Reader):
    def __init__(self, uri: str):
        super().__init__(uri)
        self.uri, self.base = uri, uri.rstrip("/")

    def _call(self, endpoint: str, *, query: dict | None = None, body: dict | None = None) -> dict:
        url = f"{self.base}/api/2.0/mlflow/{endpoint}" + (f"?{urlencode(query)}" if query else "")
        return json.loads(self._open(url, body).read() or b"{}")

    def _open(self, url: str, body: dict | None = None):
        request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json", **auth_header()})
        try:
            return urllib.request.urlopen(request, timeout=TIMEOUT_S, context=tls_context())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise StoreError(f"{self.base}: {url.removeprefix(self.base)} answered {e.code}: {detail.strip()[:300]}") \
                from None

    def _pages(self, endpoint: str, body: dict, items: str, limit: int | None = None) -> list[dict]:
        out, token = [], None
        while True:
            page = self._call(endpoint, body={**body, **({"page_token": token} if token else {})})
            out += page.get(items, [])
            token = page.get("next_page_token")
            if not token or (limit and len(out) >= limit):
                return out[:limit] if limit else out

    def runs_tagged(self, tags, *, experiment_id=None, max_results=None):
        if experiment_id is not None:
            experiments = [experiment_id]
        else:
            found = self._pages("experiments/search", {"max_results": 1000, "view_type": "ACTIVE_ONLY"}, "experiments")
            experiments = [e["experiment_id"] for e in found]
        if not experiments:
            return []
        body = {"experiment_ids": experiments, "filter": tag_filter(tags), "run_view_type": "ACTIVE_ONLY",
                "max_results": min(max_results or MAX_PAGE, MAX_PAGE), "order_by": ["attributes.start_time DESC"]}
        return [_run(doc) for doc in self._pages("runs/search", body, "runs", max_results)]

    def get_run(self, run_id):
        return _run(self._call("runs/get", query={"run_id": run_id})["run"])

    def metric_history(self, run_id, key):
        points, token = [], None
        while True:
            page = self._call("metrics/get-history", query={"run_id": run_id, "metric_key": key, "max_results": 25000,
                                                            **({"page_token": token} if token else {})})
            points += [MetricPoint(key, _number(m["value"]), int(m.get("timestamp", 0)), int(m.get("step", 0)))
                       for m in page.get("metrics", [])]
            token = page.get("next_page_token")
            if not token:
                return points

    def _entries(self, run_id: str, path: str | None) -> list[dict]:
        return self._call("artifacts/list", query={"run_id": run_id, **({"path": path} if path else {})}).get("files", [])

    def list_artifacts(self, run_id, path=None):
        if self.artifact_root(run_id) is not None:
            return super().list_artifacts(run_id, path)
        return [f["path"] for f in self._entries(run_id, path)]

    def download_artifact(self, run_id, path, dst):
        artifact_uri = self.artifact_uri(run_id)
        if urlparse(artifact_uri).scheme != PROXIED:
            return super().download_artifact(run_id, path, dst)  # on this disk, or through MLflow's own client
        parent = path.rstrip("/").rpartition("/")[0]
        entry = next((f for f in self._entries(run_id, parent or None) if f["path"] == path.rstrip("/")), None)
        if entry is None:
            raise FileNotFoundError(f"no artifact {path!r} on run {run_id} at {self.base}")
        target = Path(dst) / entry["path"]
        if entry.get("is_dir"):
            target.mkdir(parents=True, exist_ok=True)
            for child in self._entries(run_id, entry["path"]):
                self.download_artifact(run_id, child["path"], dst)
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._open(self._proxied_url(artifact_uri, entry["path"])) as response, open(target, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        return target

    def _proxied_url(self, artifact_uri: str, path: str) -> str:
        """``mlflow-artifacts:/E/R/artifacts`` -> the server's ``/api/2.0/mlflow-artifacts/artifacts/E/R/artifacts``
        (a URI that names a host, ``mlflow-artifacts://host:port/...``, is served there)."""
        parsed = urlparse(artifact_uri)
        base = f"{urlparse(self.base).scheme}://{parsed.netloc}" if parsed.netloc else self.base
        return f"{base}/api/2.0/mlflow-artifacts/artifacts/{quote(parsed.path.strip('/'))}/{quote(path)}"
