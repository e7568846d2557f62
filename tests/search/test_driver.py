"""Search state that outlives the driver (fast, no Ray cluster): storage and parent-run copies of the
metadata, stale drivers, database URIs, ASHA rungs across a resume, Ray's refusals in one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from records import schema as tracking
from records import writer
from records.states import Outcome, SearchState
from search import driver
from search.errors import SearchError


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, writer.client_for(uri)


def a_parent(client, name: str, **tags) -> str:
    exp = writer.experiment_id(client, "durable")
    return client.create_run(exp, run_name=name, tags={tracking.ROLE: "search", tracking.SEARCH: name,
                                                      tracking.STATE: "running", **tags}).info.run_id


def meta_for(name: str, parent: str, uri: str, storage: str) -> dict:
    return {"name": name, "study_path": "/gone/study.yaml", "tracking_uri": uri, "parent_run_id": parent,
            "sampler": "tpe", "num_samples": 4, "max_concurrent": None, "storage": storage}


def test_search_found_from_storage_or_parent_run_when_runs_dir_is_gone(store, tmp_path, monkeypatch):
    uri, client = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage, study = tmp_path / "storage", tmp_path / "s.yaml"
    study.write_text("name: s\n")
    parent = a_parent(client, "s1")
    meta = meta_for("s1", parent, uri, str(storage))
    driver.write_to_storage(str(storage), "s1", meta, study)
    driver.write_to_parent(client, parent, meta)
    empty = tmp_path / "elsewhere" / "runs"
    found, body = driver.find_search("s1", runs=empty, storage=str(storage), tracking_uri=uri)
    assert found["parent_run_id"] == parent and body == b"name: s\n"
    (storage / "s1" / driver.META_FILE).unlink()  # storage unreadable: the parent run still knows
    found, body = driver.find_search("s1", runs=empty, storage=None, tracking_uri=uri)
    assert found["storage"] == str(storage) and body == b"name: s\n"
    with pytest.raises(SearchError, match="no search named 'nope'"):
        driver.find_search("nope", runs=empty, storage=None, tracking_uri=uri)


def test_recorded_metadata_has_no_database_password(store, tmp_path):
    uri, client = store
    parent = a_parent(client, "s2")
    secret = "postgresql+psycopg2://mlflow:hunter2@127.0.0.1:5432/mlflow"
    driver.write_to_parent(client, parent, meta_for("s2", parent, secret, str(tmp_path)))
    recorded = json.loads(client.get_run(parent).data.tags[driver.META_TAG])
    assert recorded["tracking_uri"] == "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow"


def test_silent_driver_is_marked_lost_and_its_running_trials_interrupted(store):
    uri, client = store
    old = a_parent(client, "dead", **{driver.HEARTBEAT: str(int(time.time() - 10 * driver.LOST_AFTER_S))})
    live = a_parent(client, "alive", **{driver.HEARTBEAT: str(int(time.time()))})
    exp = client.get_run(old).info.experiment_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": old, tracking.TRIAL_ID: "t1",
                                         tracking.STATE: "running"}).info.run_id
    from search.queries import list_searches

    table = list_searches(uri).set_index("search")
    assert table.loc["dead", "status"] == SearchState.DRIVER_LOST and table.loc["alive", "status"] == "running"
    assert client.get_run(child).data.tags[tracking.STATE] == Outcome.INTERRUPTED
    assert client.get_run(child).info.status == "KILLED" and client.get_run(old).info.status == "KILLED"
    assert client.get_run(live).info.status == "RUNNING"


def test_postgresql_uri_gets_the_installed_driver():
    pytest.importorskip("psycopg2")
    assert tracking.with_db_driver("postgresql://u@h:5432/db") == "postgresql+psycopg2://u@h:5432/db"
    assert tracking.with_db_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert tracking.with_db_driver("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_experiments_open_in_the_training_view(store):
    _, client = store
    exp = writer.experiment_id(client, "kind")
    assert client.get_experiment(exp).tags[writer.EXPERIMENT_KIND[0]] == "custom_model_development"


def test_asha_after_resume_decides_as_without_interruption():
    """Trial a passed rung 2 before the interruption; after the resume it reports epoch 3, past that rung.

    Restored without its rungs, ASHA judges it at rung 2 again, late, against trial b alone (recorded
    since the resume) and stops it; with AshaState's saved rungs it continues, as it would have.
    """
    import pickle

    from ray.tune.schedulers import ASHAScheduler

    from search.callbacks import AshaState

    class T:
        def __init__(self, tid):
            self.trial_id = tid

    def fresh():
        s = ASHAScheduler(time_attr="training_iteration", metric="acc", mode="max", max_t=8, grace_period=2,
                          reduction_factor=2)
        return s, AshaState(s)

    scheduler, state_cb = fresh()
    tuner_pkl = pickle.dumps((scheduler, state_cb))  # Tune pickles both before the search starts
    a, b, c = T("a"), T("b"), T("c")
    for t in (a, b, c):
        scheduler.on_trial_add(None, t)
    for t, acc in ((c, 0.1), (a, 0.5)):
        assert scheduler.on_trial_result(None, t, {"training_iteration": 2, "acc": acc}) == "CONTINUE"
    saved = state_cb.get_state()  # what Tune's experiment checkpoint holds

    for restore in (False, True):
        scheduler2, cb2 = pickle.loads(tuner_pkl)
        assert scheduler2 is cb2.scheduler
        if restore:
            cb2.set_state(saved)
        for t in (a, b):
            scheduler2.on_trial_add(None, t)
        scheduler2.on_trial_result(None, b, {"training_iteration": 2, "acc": 0.9})
        decision = scheduler2.on_trial_result(None, a, {"training_iteration": 3, "acc": 0.5})
        assert decision == ("CONTINUE" if restore else "STOP")


def test_refused_ray_token_is_one_line():
    from search.cluster import AUTH_HINT, ray_init_error

    class AuthenticationError(Exception):
        pass

    try:
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
        except AuthenticationError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from inner
    except ConnectionError as e:
        line = ray_init_error("10.0.0.1:6379", e)
    assert line == f"--address 10.0.0.1:6379: {AUTH_HINT}" and "\n" not in line
    assert "cannot connect" in ray_init_error(None, ConnectionError("Failed to connect"))


def test_study_file_recovered_into_runs_dir(store, tmp_path, monkeypatch):
    from search.runner import recover_meta

    uri, client = store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = tmp_path / "s.yaml"
    study.write_text("name: s\n")
    parent = a_parent(client, "s3")
    driver.write_to_storage(str(tmp_path / "st"), "s3", meta_for("s3", parent, uri, str(tmp_path / "st")), study)
    meta = recover_meta("s3", tmp_path / "runs", str(tmp_path / "st"), uri)
    assert Path(meta.study_path).read_text() == "name: s\n" and meta.tracking_uri == uri
    assert (tmp_path / "runs" / "s3" / driver.META_FILE).is_file()


def test_epoch_trained_again_after_resume_is_logged_once(store):
    """The driver stopped after logging epoch 2 but before Tune registered its checkpoint: the resumed trial
    trains epoch 2 again; the run keeps one value per step and counts the redone epoch."""
    from search.callbacks import MlflowTrialLogger

    uri, client = store
    parent = a_parent(client, "redo")
    exp = client.get_run(parent).info.experiment_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent, tracking.TRIAL_ID: "t1"}).info.run_id
    for step, acc in ((1, 0.5), (2, 0.6)):
        client.log_metric(child, "val_acc", acc, step=step)

    class Trial:
        trial_id, config = "t1", {"lr": 0.01}

    from records.states import TrialTracker

    logger = MlflowTrialLogger(uri, parent, "redo", TrialTracker("val_acc", "max", 4))
    logger.setup()
    for step in (2, 3):
        logger.on_trial_result(0, [], Trial(), {"training_iteration": step, "val_acc": 0.6 + step / 100, "lr": 0.01})
    logger.flush()  # what Tune's next experiment checkpoint does
    steps = [m.step for m in client.get_metric_history(child, "val_acc")]
    assert sorted(steps) == [1, 2, 3]
    run = client.get_run(child)
    assert run.data.tags["rs.epochs_redone"] == "1"
    assert "lr_epoch" in run.data.metrics and "lr" not in run.data.metrics  # not the parameter's name


def test_a_search_joins_a_running_head_and_passes_over_a_stale_record(tmp_path, monkeypatch, caplog, capsys):
    """Without --address a search joins the head `ray start` recorded (0.1 s instead of starting Ray); a record
    left by a head that is gone would make ray.init wait for minutes, so it is passed over with a warning."""
    import socket

    from search.cluster import running_local_ray
    from search.errors import SearchError

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert running_local_ray() is None  # nothing recorded: a private local Ray
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        live = f"127.0.0.1:{listening.getsockname()[1]}"
        (tmp_path / "ray" / "ray_current_cluster").parent.mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text(live)
        assert running_local_ray() == live
        assert f"using the Ray head already running at {live}" in capsys.readouterr().err
        monkeypatch.setenv("RAY_ADDRESS", "local")
        assert running_local_ray() is None
        monkeypatch.delenv("RAY_ADDRESS")
    # the head is gone (its port closed), its record stays
    assert running_local_ray() is None
    assert "does not answer" in caplog.text
    monkeypatch.setenv("RAY_ADDRESS", live)
    with pytest.raises(SearchError, match=r"\$RAY_ADDRESS: no Ray cluster answers"):
        running_local_ray()


def test_a_trial_resumed_past_its_best_epoch_keeps_that_best(store):
    """Tune pickles the callback when the search starts and restores ``get_state`` from its last experiment
    checkpoint: the best epoch (2, 0.8) seen before the interruption stays the trial's best after it."""
    import pickle

    from records.states import TrialTracker
    from search.callbacks import MlflowTrialLogger

    uri, client = store
    parent = a_parent(client, "kept")

    class Trial:
        trial_id, config = "t1", {"lr": 0.01}

    logger = MlflowTrialLogger(uri, parent, "kept", TrialTracker("val_acc", "max", 6))
    at_start = pickle.dumps(logger)
    logger.setup()
    for step, acc in ((1, 0.5), (2, 0.8), (3, 0.6)):
        logger.on_trial_result(0, [], Trial(), {"training_iteration": step, "val_acc": acc})
    saved = pickle.loads(pickle.dumps(logger.get_state()))
    resumed = pickle.loads(at_start)
    resumed.set_state(saved)
    resumed.setup()
    resumed.on_trial_result(0, [], Trial(), {"training_iteration": 4, "val_acc": 0.7})
    resumed.flush()
    run = client.get_run(resumed.runs["t1"])
    assert run.data.metrics[tracking.best_key("val_acc")] == 0.8 and run.data.metrics["best_epoch"] == 2
