"""A tracking store that stops answering mid-search (issue 17 §3): the progress line says since when and
how many records wait, a flush says it waits, and when the store is back every record lands once.
The store is a real sqlite one behind a client that refuses connections while ``down`` is set."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from records import schema
from records.states import TrialTracker
from search import callbacks
from search.callbacks import MlflowTrialLogger, store_unreachable
from search.progress import LiveProgress

QUICK = Path(__file__).resolve().parents[1] / "spaces" / "quickstart.yaml"


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
    client = schema.client_for(uri)
    parent = schema.start_parent(client, load_study(QUICK), "outage-1", QUICK, sampler="tpe")
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
    assert status.split("since ")[1][:8] >= went_down[:8] and status.endswith("1 records waiting")
    cb.on_trial_complete(0, [], trial)  # queued behind the waiting write
    assert cb.outage().endswith("2 records waiting")
    assert "| MLflow store not answering since" in progress.summary()

    threading.Timer(0.6, lambda: setattr(cb._client, "down", False)).start()
    cb.flush()  # an experiment checkpoint: waits for the store, says so, carries on when it is back
    err = capsys.readouterr().err
    assert "records waiting; the search waits for it (nothing is lost)" in err
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
