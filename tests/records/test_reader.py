"""``records.reader`` gives what ``MlflowClient`` gives: the same runs (newest first, deleted ones left out), tags,
params, latest metrics (NaN and +/-inf included), metric histories (an epoch logged twice included) and
artifacts, from a store the real writers wrote. SQLite here; an MLflow server and PostgreSQL are slow."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import records
from records import schema, writer
from records.reader import ClientReader, as_reader, local_artifact_root
from records.rest_reader import RestReader, auth_header
from records.sql_reader import SqlReader

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
import dev_cluster  # noqa: E402
from cli_startup import make_store  # noqa: E402

NAME = "rd-1"
ODD = {"nan_metric": float("nan"), "up": float("inf"), "down": float("-inf"), "plain": 0.25}


def add_odd_runs(uri: str) -> None:
    """Beside the search: a trial with NaN and infinite metrics, a re-logged epoch and a nested artifact; a deleted
    trial; a search in a deleted experiment."""
    client = writer.client_for(uri)
    parent = schema.find_parent(client, NAME)
    exp = parent.info.experiment_id
    odd = client.create_run(exp, run_name=f"{NAME}/odd", tags={schema.PARENT: parent.info.run_id, schema.ROLE: "trial",
                                                                schema.TRIAL_ID: "t_odd", schema.STATE: "failed: x"})
    rid = odd.info.run_id
    for key, value in ODD.items():
        client.log_metric(rid, key, value, step=1)
    client.log_metric(rid, "val_acc", 0.3, step=1, timestamp=1000)
    client.log_metric(rid, "val_acc", 0.4, step=1, timestamp=2000)  # the epoch redone after a restore
    client.log_metric(rid, "val_acc", 0.5, step=2, timestamp=3000)
    client.log_param(rid, "lr", "0.5")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a.txt").write_text("nested artifact\n")
        client.log_artifact(rid, str(Path(d) / "a.txt"), "sub/deeper")
    client.set_terminated(rid, "FAILED")
    gone = client.create_run(exp, run_name=f"{NAME}/gone", tags={schema.PARENT: parent.info.run_id,
                                                                  schema.ROLE: "trial", schema.TRIAL_ID: "t_gone"})
    client.delete_run(gone.info.run_id)
    old = client.create_experiment("deleted-experiment")
    client.create_run(old, run_name="hidden", tags={schema.ROLE: "search", schema.SEARCH: "hidden"})
    client.delete_experiment(old)


def comparable(value):
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def snapshot(run) -> tuple:
    i = run.info
    return ((i.run_id, i.experiment_id, i.run_name, i.status, i.start_time, i.end_time, i.artifact_uri,
             i.lifecycle_stage), dict(run.data.tags), dict(run.data.params),
            {k: comparable(v) for k, v in run.data.metrics.items()})


def assert_reads_like_the_client(reader, client: MlflowClient, tmp: Path) -> None:
    theirs = ClientReader(client)
    parents = schema.search_parents(reader)
    assert [snapshot(r) for r in parents] == [snapshot(r) for r in schema.search_parents(theirs)]
    assert [r.data.tags[schema.SEARCH] for r in parents] == [NAME]  # the deleted experiment's search is left out
    parent = schema.find_parent(reader, NAME)
    assert snapshot(parent) == snapshot(schema.find_parent(theirs, NAME))
    assert schema.find_parent(reader, "absent") is None
    children = schema.child_runs(reader, parent)
    assert [snapshot(r) for r in children] == [snapshot(r) for r in schema.child_runs(theirs, parent)]
    assert sorted(r.data.tags[schema.TRIAL_ID] for r in children) == ["t_00001", "t_00002", "t_odd"]  # not t_gone
    odd = next(r for r in children if r.data.tags[schema.TRIAL_ID] == "t_odd")
    assert math.isnan(odd.data.metrics["nan_metric"]) and odd.data.metrics["plain"] == 0.25
    assert odd.data.metrics["up"] > 1e308 and odd.data.metrics["down"] < -1e308  # MLflow keeps inf as the largest float
    assert snapshot(reader.get_run(odd.info.run_id)) == snapshot(client.get_run(odd.info.run_id))
    for run in children:
        for key in run.data.metrics:
            mine = [(m.step, comparable(m.value), m.timestamp) for m in reader.metric_history(run.info.run_id, key)]
            assert mine == [(m.step, comparable(m.value), m.timestamp) for m in client.get_metric_history(run.info.run_id, key)]
    assert [(m.step, m.value) for m in reader.metric_history(odd.info.run_id, "val_acc")] == [(1, 0.3), (1, 0.4), (2, 0.5)]
    for run_id, path in [(parent.info.run_id, None), (parent.info.run_id, "study"), (odd.info.run_id, None),
                         (odd.info.run_id, "sub"), (odd.info.run_id, "sub/deeper"), (odd.info.run_id, "absent")]:
        assert reader.list_artifacts(run_id, path) == [a.path for a in client.list_artifacts(run_id, path)], path
    assert reader.list_artifacts(odd.info.run_id, "sub/deeper") == ["sub/deeper/a.txt"]
    got = reader.download_artifact(odd.info.run_id, "sub", tmp / "mine")
    assert got == tmp / "mine" / "sub" and (got / "deeper" / "a.txt").read_text() == "nested artifact\n"
    study = reader.list_artifacts(parent.info.run_id, "study")[0]
    assert reader.download_artifact(parent.info.run_id, study, tmp / "mine").read_bytes() == \
        Path(client.download_artifacts(parent.info.run_id, study, str(tmp / "theirs"))).read_bytes()


def assert_tables_like_the_client(uri: str, client: MlflowClient) -> None:
    """What ``ls``, ``show`` and ``export`` print is made of these: the same through either reader."""
    pd.testing.assert_frame_equal(records.trials(NAME, uri), records.trials(NAME, uri, client=client))
    pd.testing.assert_frame_equal(records.histories(NAME, uri), records.histories(NAME, uri, client=client))
    assert records.best_trial_record(NAME, uri) == records.best_trial_record(NAME, uri, client=client)
    assert records.search_info(NAME, uri) == records.search_info(NAME, uri, client)
    mine = records.list_searches(uri)
    assert len(mine) == 1 and mine["search"].tolist() == [NAME]


# ---------------------------------------------------------------- SQLite (fast)
@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reader")
    uri = make_store(tmp, NAME)
    add_odd_runs(uri)
    return tmp, uri


def test_sqlite_reads_like_the_client(sqlite_store, tmp_path):
    _, uri = sqlite_store
    reader = schema.reader_for(uri)
    assert isinstance(reader, SqlReader)  # the direct reader, not the fallback
    assert_reads_like_the_client(reader, MlflowClient(uri), tmp_path)
    assert_tables_like_the_client(uri, MlflowClient(uri))


def test_sqlite_store_is_opened_read_only(sqlite_store):
    _, uri = sqlite_store
    reader = schema.reader_for(uri)
    with pytest.raises(Exception, match="readonly"):
        reader.connection.execute("DELETE FROM tags")
    assert schema.search_parents(reader)


def test_a_missing_sqlite_file_is_not_created(tmp_path):
    missing = tmp_path / "absent.db"
    with pytest.raises(schema.StoreNotFound, match="no MLflow store at"):
        schema.reader_for(f"sqlite:///{missing}")
    assert not missing.exists()


def test_a_client_is_read_through_the_fallback(sqlite_store, tmp_path):
    """Callers that hold an ``MlflowClient`` (search/, analysis/, tests) keep passing it."""
    _, uri = sqlite_store
    client = MlflowClient(uri)
    assert schema.find_parent(client, NAME).info.run_id == schema.find_parent(schema.reader_for(uri), NAME).info.run_id
    assert isinstance(as_reader(client), ClientReader)


def test_other_stores_fall_back_to_mlflows_client(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store only on request
    reader = schema.reader_for(f"file://{tmp_path / 'mlruns'}")
    assert isinstance(reader, ClientReader) and schema.search_parents(reader) == []


def test_artifact_locations_on_this_disk():
    assert local_artifact_root("/data/mlruns/1/abc/artifacts") == Path("/data/mlruns/1/abc/artifacts")
    assert local_artifact_root("file:///data/mlruns/1/a%20b") == Path("/data/mlruns/1/a b")
    for remote in ("s3://bucket/1/abc/artifacts", "mlflow-artifacts:/1/abc/artifacts", "gs://b/x", "file://host/x"):
        assert local_artifact_root(remote) is None


def test_a_server_asking_a_client_certificate_is_read_through_mlflow(monkeypatch):
    assert isinstance(schema.reader_for("https://mlflow.example"), RestReader)
    monkeypatch.setenv("MLFLOW_TRACKING_CLIENT_CERT_PATH", "/etc/client.pem")
    assert isinstance(schema.reader_for("https://mlflow.example"), ClientReader)


def test_rest_credentials_are_mlflows():
    basic = auth_header({"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "pw"})
    assert basic == {"Authorization": "Basic YWxpY2U6cHc="}
    assert auth_header({"MLFLOW_TRACKING_TOKEN": "tok"}) == {"Authorization": "Bearer tok"}
    assert auth_header({}) == {}


# ---------------------------------------------------------------- an MLflow server, PostgreSQL (slow)
@pytest.mark.slow
def test_server_reads_like_the_client(tmp_path, monkeypatch):
    """Through the REST API, with the artifacts the server proxies (``mlflow-artifacts:``)."""
    port = dev_cluster.free_port()
    server = subprocess.Popen([dev_cluster.mlflow_exe(), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 's.db'}",
                               "--artifacts-destination", str(tmp_path / "served"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not dev_cluster.http_ok(f"{uri}/health"):
            assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
            time.sleep(0.5)
        monkeypatch.chdir(tmp_path)
        make_store(tmp_path, NAME, uri)
        add_odd_runs(uri)
        reader = schema.reader_for(uri)
        assert isinstance(reader, RestReader)
        parent = schema.find_parent(reader, NAME)
        assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
        assert_reads_like_the_client(reader, MlflowClient(uri), tmp_path)
        assert_tables_like_the_client(uri, MlflowClient(uri))
        with pytest.raises(LookupError, match="404|RESOURCE_DOES_NOT_EXIST|not found"):
            reader.get_run("0" * 32)
        urllib.request.urlopen(f"{uri}/health", timeout=5).close()
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


@pytest.mark.slow
@pytest.mark.skipif(not dev_cluster.postgres_available(), reason="PostgreSQL server binaries not installed")
def test_postgres_reads_like_the_client(tmp_path, monkeypatch):
    """psycopg2 on MLflow's schema in PostgreSQL 15; the password from $PGPASSWORD, never in the URI."""
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver comes with the cluster extra")
    root = Path(tempfile.mkdtemp(prefix="rsrd-", dir="/tmp"))
    root.chmod(0o755)  # the postgres user reaches its data folder
    port = dev_cluster.free_port()
    pid = dev_cluster.start_postgres(root, port, "pw-reader")
    try:
        monkeypatch.setenv("PGPASSWORD", "pw-reader")
        monkeypatch.chdir(tmp_path)
        uri = f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
        make_store(tmp_path, NAME, schema.tracking_uri(uri))
        add_odd_runs(uri)
        reader = schema.reader_for(uri)
        assert isinstance(reader, SqlReader)
        assert_reads_like_the_client(reader, MlflowClient(schema.tracking_uri(uri)), tmp_path)
        assert_tables_like_the_client(uri, MlflowClient(schema.tracking_uri(uri)))
    finally:
        subprocess.run(dev_cluster.as_pg_user() + [dev_cluster.pg_bin("pg_ctl"), "-D", str(root / "pg" / "data"),
                                                   "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    assert not dev_cluster.pid_alive(pid)
