"""A tracking store that stops answering mid-search (issue 17 §3): the progress line says since when and
how many records wait, a flush says it waits, and when the store is back every record lands once.
The store is a real sqlite one behind a client that refuses connections while ``down`` is set."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from records import schema, writer
from records.states import TrialTracker
from search import callbacks
from search.callbacks import MlflowTrialLogger, store_unreachable
from search.progress import LiveProgress

QUICK = Path(__file__).resolve().parents[2] / "spaces" / "quickstart.yaml"


class FlakyClient:
    """The real client, except that every call raises ConnectionError while ``down`` is set."""

    def __init__(self, client):
        self.client, self.down, self.refused = client, False, 0

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            if self.down:
                self.refused += 1
                raise ConnectionError("Connection refused")
            return method(*args, **kwargs)

        return call


@pytest.fixture
def logger(tmp_path, monkeypatch):
    from spaces.study import load_study

    monkeypatch.setattr(callbacks, "RETRY_EVERY_S", 0.05)
    monkeypatch.setattr(callbacks, "SLOW_WRITE_S", 0.1)
    monkeypatch.setattr(callbacks, "REPORT_OUTAGE_EVERY_S", 0.2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = writer.client_for(uri)
    parent = writer.start_parent(client, load_study(QUICK), "outage-1", QUICK, sampler="tpe")
    cb = MlflowTrialLogger(uri, parent, "outage-1", TrialTracker("val_acc", "max", 3))
    cb.setup()
    cb._client = FlakyClient(cb.client)
    return cb, client


def test_unreachable_errors_are_told_from_request_errors():
    wrapped = RuntimeError("API request to http://h:5000/api/2.0/mlflow/runs/log-batch failed: Max retries exceeded")
    assert store_unreachable(ConnectionError()) and store_unreachable(wrapped)
    chained = ValueError("bad")
    chained.__cause__ = TimeoutError()
    assert store_unreachable(chained)
    assert not store_unreachable(ValueError("INVALID_PARAMETER_VALUE: metric name"))


def test_outage_is_on_the_progress_line_and_nothing_is_lost(logger, capsys):
    cb, client = logger
    progress = LiveProgress(TrialTracker("val_acc", "max", 3), 1, stream=io.StringIO(), every_s=1e9,
                            store_status=cb.outage)
    trial = SimpleNamespace(trial_id="t_1", config={"lr": 0.1}, error_file=None,
                            placement_group_factory=SimpleNamespace(required_resources={"CPU": 1.0}))
    cb.on_trial_start(0, [], trial)
    cb.flush()
    assert cb.outage() is None and "not answering" not in progress.summary()
    cb._client.down = True
    went_down = time.strftime("%H:%M:%S")
    for epoch in (1, 2, 3):
        cb.on_trial_result(0, [], trial, {"epoch": epoch, "training_iteration": epoch, "val_acc": 0.1 * epoch})
    cb._write_metrics()  # the once-a-second batch: queued, refused, tried again
    time.sleep(0.4)
    assert cb._client.refused >= 2
    status = cb.outage()
    assert status is not None and status.startswith("MLflow store not answering since ")
    assert status.split("since ")[1][:8] >= went_down[:8] and status.endswith(", 1 record waiting")
    cb.on_trial_complete(0, [], trial)  # queued behind the waiting write
    assert cb.outage().endswith("2 records waiting")
    assert "| MLflow store not answering since" in progress.summary()

    threading.Timer(0.6, lambda: setattr(cb._client, "down", False)).start()
    cb.flush()  # an experiment checkpoint: waits for the store, says so, carries on when it is back
    err = capsys.readouterr().err
    assert "2 records waiting; the search waits for it (nothing is lost)" in err
    assert "MLflow store answers again" in err
    assert cb.outage() is None and "not answering" not in progress.summary()
    run = client.get_run(cb.runs["t_1"])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert steps == [1, 2, 3]  # each epoch once
    assert run.info.status == "FINISHED" and run.data.tags[schema.STATE] == "completed"


def test_a_request_the_store_refuses_is_not_retried(logger):
    cb, _ = logger

    def bad():
        raise ValueError("INVALID_PARAMETER_VALUE")

    cb._submit(bad)
    with pytest.raises(ValueError):
        cb.flush()


# ---------------------------------------------------------------- a real server stopped and restarted (slow)
OUTAGE_STUDY = """\
name: outage_tiny
family: optimization
dataset: digits
budget: {num_samples: 2, max_epochs: 5000, scheduler: none, time_budget_s: 75}
resources: {cpus: 1, gpus: 0}
fixed: {model: cnn, filters: [16, 32], batch_size: 16}
search:
  lr: {type: loguniform, low: 1.0e-3, high: 0.1}
seed: 0
"""


@pytest.mark.slow
def test_search_survives_its_tracking_server_going_away(tmp_path):
    """`search run` on an `mlflow server`, stopped once the trials have logged an epoch and started again
    30 s later: the search says it waits, ends normally, and every trial has each epoch once.

    The trials run until the search's time budget (75 s), so the outage falls inside them however fast
    the machine is (a fixed 40-epoch budget ended before the outage on an idle machine)."""
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "scripts"))
    import dev_cluster  # the scripts folder is no package

    port = dev_cluster.free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = dev_cluster.mlflow_server_cmd(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", port)

    def start_server(n: int):
        proc = dev_cluster.spawn(cmd, tmp_path / f"server{n}.log", dict(os.environ))
        dev_cluster.wait_for(lambda: dev_cluster.http_ok(f"{url}/health"), "mlflow server", 120, proc)
        return proc

    (tmp_path / "artifacts").mkdir()
    (tmp_path / "study.yaml").write_text(OUTAGE_STUDY)
    home = Path(tempfile.mkdtemp(prefix="rs17o-"))  # short: Ray's socket paths
    env = {"PYTHONPATH": str(root), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home),
           "RAY_ADDRESS": "local", "RAY_TMPDIR": str(home)}
    server = start_server(1)
    with open(tmp_path / "search.out", "w") as out, open(tmp_path / "search.err", "w") as err:
        search = subprocess.Popen([sys.executable, "-m", "search.cli", "run", "study.yaml", "--tracking-uri", url,
                                   "--name", "outage"], cwd=tmp_path, env=env, stdout=out, stderr=err)
        try:
            client = writer.client_for(url)

            def epochs_logged() -> int:
                parent = schema.find_parent(client, "outage")
                children = schema.child_runs(client, parent) if parent is not None else []
                return sum(len(client.get_metric_history(c.info.run_id, "val_acc")) for c in children)

            deadline = time.monotonic() + 180
            while epochs_logged() == 0:
                assert search.poll() is None and time.monotonic() < deadline, (tmp_path / "search.err").read_text()
                time.sleep(1)
            dev_cluster.stop_groups([server.pid])
            time.sleep(30)
            server = start_server(2)
            assert search.wait(timeout=400) == 0, (tmp_path / "search.err").read_text()[-3000:]
            said = (tmp_path / "search.err").read_text() + (tmp_path / "search.out").read_text()
            assert "MLflow store not answering since" in said and "waiting; the search waits for it" in said
            assert "MLflow store answers again" in said
            children = schema.child_runs(client, schema.find_parent(client, "outage"))
            assert len(children) == 2
            for run in children:
                steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc"))
                assert len(steps) > 1 and steps == list(range(1, len(steps) + 1)), steps  # every epoch, once
        finally:
            if search.poll() is None:
                search.kill()
            dev_cluster.stop_groups([server.pid])
            shutil.rmtree(home, ignore_errors=True)
