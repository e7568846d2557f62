"""One driver per search: a name is claimed before Ray starts, and a resume never joins a live driver.

Fast tests drive the claims and the liveness rule on a sqlite store; the slow ones start real searches
(two `search run --name X` at once; `search resume X` while X's driver runs).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from records import schema, writer
from records.states import SearchState
from search import driver
from search.errors import SearchError


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, writer.client_for(uri)


def a_parent(client, name: str, **tags) -> str:
    exp = writer.experiment_id(client, "drivers")
    return client.create_run(exp, run_name=name, tags={schema.ROLE: "search", schema.SEARCH: name,
                                                      schema.STATE: "running", **tags}).info.run_id


# ---------------------------------------------------------------- the name
def test_second_claim_of_a_runs_folder_is_refused(tmp_path):
    driver.claim_folder(tmp_path / "runs" / "dup", "dup")
    with pytest.raises(SearchError, match=r"a search named 'dup' already exists in .*runs/: choose another --name"):
        driver.claim_folder(tmp_path / "runs" / "dup", "dup")


def test_of_two_parent_runs_created_at_once_the_first_is_kept(store):
    uri, client = store
    first = a_parent(client, "twin")
    time.sleep(0.01)
    second = a_parent(client, "twin")
    with pytest.raises(SearchError, match="was started at the same time"):
        driver.claim_parent(client, "twin", second, uri)
    driver.claim_parent(client, "twin", first, uri)  # the first keeps its run
    assert [r.info.run_id for r in schema.parents_named(client, "twin")] == [first]
    assert client.get_run(second).info.lifecycle_stage == "deleted"
    client.set_tag(first, driver.DRIVER, "pid 7 on h")
    with pytest.raises(SearchError, match=r"a search named 'twin' already exists in MLflow .*driver pid 7 on h"):
        driver.check_name_free(client, "twin", uri)
    driver.check_name_free(client, "other", uri)


def test_a_name_taken_in_the_store_is_refused_before_ray_and_leaves_nothing(store, tmp_path, monkeypatch):
    """Another checkout's search of that name shares the tracking store: refused; the claimed folder is removed."""
    from search import runner

    uri, client = store
    a_parent(client, "shared")
    started = []
    monkeypatch.setattr(runner, "init_ray", lambda address: started.append(address))
    study = tmp_path / "s.yaml"
    study.write_text(STUDY)
    with pytest.raises(SearchError, match="a search named 'shared' already exists in MLflow"):
        runner.start_search(study, name="shared", tracking_uri=uri, runs_dir=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs" / "shared").exists()
    assert len(schema.parents_named(client, "shared")) == 1


# ---------------------------------------------------------------- liveness
def test_a_live_driver_refuses_a_resume_and_says_where_it_runs(store):
    _, client = store
    now = int(time.time())
    live = client.get_run(a_parent(client, "live", **driver.driver_tags(now - 40)))
    client.set_tag(live.info.run_id, driver.HEARTBEAT, str(int(now - 10)))
    with pytest.raises(SearchError) as info:
        driver.refuse_if_live(client.get_run(live.info.run_id), now)
    text = str(info.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in text
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(now - 40))) in text  # since when
    assert "last heartbeat 10 s ago" in text and f"after {driver.LOST_AFTER_S:.0f} s" in text
    # a heartbeat just older than the stated timeout lets a resume take over; a stopped search always does
    client.set_tag(live.info.run_id, driver.HEARTBEAT, str(int(now - driver.LOST_AFTER_S - 1)))
    driver.refuse_if_live(client.get_run(live.info.run_id), now)
    stopped = a_parent(client, "stopped", **{**driver.driver_tags(now), schema.STATE: SearchState.INTERRUPTED.value})
    driver.refuse_if_live(client.get_run(stopped), now)


def test_resume_of_a_live_search_exits_2_before_ray_starts(store, tmp_path, capsys):
    """`search resume` of a search whose recorded driver beats: exit 2 in one line, nothing rewritten, no Ray."""
    import ray

    from search.cli import main

    uri, client = store
    parent = a_parent(client, "busy", **driver.driver_tags())
    folder = tmp_path / "runs" / "busy"
    folder.mkdir(parents=True)
    (folder / driver.STUDY_FILE).write_text(STUDY)
    meta = (f'{{"name": "busy", "study_path": "{folder / driver.STUDY_FILE}", "tracking_uri": "{uri}", '
            f'"parent_run_id": "{parent}", "sampler": "tpe", "num_samples": 2, "max_concurrent": null, '
            f'"storage": "{tmp_path / "runs"}"}}')
    (folder / driver.META_FILE).write_text(meta)
    code = main(["resume", "busy", "--runs-dir", str(tmp_path / "runs"), "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: search 'busy' is running") and len(err.splitlines()) == 1
    assert f"pid {os.getpid()} on {socket.gethostname()}" in err
    assert (folder / driver.META_FILE).read_text() == meta and not ray.is_initialized()
    assert client.get_run(parent).data.tags[driver.DRIVER] == f"pid {os.getpid()} on {socket.gethostname()}"


def test_resume_against_a_store_without_the_search_is_one_line(store, tmp_path, capsys):
    from search.cli import main

    uri, _ = store
    folder = tmp_path / "runs" / "elsewhere"
    folder.mkdir(parents=True)
    (folder / driver.STUDY_FILE).write_text(STUDY)
    (folder / driver.META_FILE).write_text(
        f'{{"name": "elsewhere", "study_path": "{folder / driver.STUDY_FILE}", "tracking_uri": "{uri}", '
        f'"parent_run_id": "0123456789abcdef0123456789abcdef", "sampler": "tpe", "num_samples": 2, '
        f'"max_concurrent": null, "storage": "{tmp_path / "runs"}"}}')
    assert main(["resume", "elsewhere", "--runs-dir", str(tmp_path / "runs"), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: search 'elsewhere': its parent run 0123456789abcdef0123456789abcdef is not in "
                          "MLflow at sqlite:///") and len(err.splitlines()) == 1, err


def test_trial_runs_do_not_inherit_the_drivers_tags(store):
    from records.states import TrialTracker
    from search.callbacks import MlflowTrialLogger

    uri, client = store
    parent = a_parent(client, "heirs", **{**driver.driver_tags(), "rs.family": "optimization"})
    logger = MlflowTrialLogger(uri, parent, "heirs", TrialTracker("val_acc", "max", 2))
    logger.setup()
    assert logger.inherited_tags == {schema.SEARCH: "heirs", "rs.family": "optimization"}


# ---------------------------------------------------------------- real searches
STUDY = textwrap.dedent("""\
    name: drivers
    family: optimization
    dataset: digits
    budget: {num_samples: 4, max_epochs: 3, scheduler: none}
    resources: {cpus: 1, gpus: 0}
    fixed: {model: cnn, filters: [8, 16], batch_size: 64, optimizer: adam, max_train_samples: 600}
    search:
      lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}
""")


def search_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "search", *args]


def env() -> dict:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root, "RAY_ADDRESS": "local"}


@pytest.mark.slow
def test_two_runs_with_one_name_started_together(tmp_path):
    """The second exits 2 at once with one line; the first runs every trial, its table and best are right."""
    (tmp_path / "s.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = search_cmd("run", "s.yaml", "budget.max_epochs=2", "--name", "dup", "--tracking-uri", uri, "--quiet")
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    ended = {}
    while len(ended) < 2:
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = time.monotonic() - t0
        assert time.monotonic() - t0 < 400, "the searches did not end"
        time.sleep(0.2)
    outs = [p.communicate() for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    winner = next(i for i, p in enumerate(procs) if p.returncode == 0)
    loser = 1 - winner
    err = outs[loser][1]
    assert err.startswith("error: a search named 'dup' already exists") and len(err.splitlines()) == 1, err
    assert ended[loser] < 20 and ended[loser] < ended[winner] / 2, ended  # at once, long before the first ends
    out = outs[winner][0]
    assert "top 4 of 4 trials of 'dup'" in out and "\nbest: trial " in out
    assert "workflowType=machine_learning" in out  # the UI link opens the training view
    client = writer.client_for(uri)
    (parent,) = schema.parents_named(client, "dup")
    assert parent.data.tags[schema.STATE] == "finished"
    assert parent.data.tags["rs.overrides"] == "budget.max_epochs=2" and parent.data.params["max_epochs"] == "2"
    children = schema.child_runs(client, parent)
    assert len(children) == 4 and all(c.data.tags[schema.STATE] == "completed" for c in children)
    assert all(c.data.tags[schema.EPOCHS_RUN] == "2" for c in children)  # the override acted
    ls = subprocess.run(search_cmd("ls", "--tracking-uri", uri), cwd=tmp_path, env=env(), capture_output=True,
                        text=True, timeout=120)
    rows = [line for line in ls.stdout.splitlines() if line.split()[:1] == ["dup"]]
    assert len(rows) == 1 and "finished" in rows[0], ls.stdout


@pytest.mark.slow
def test_resume_while_the_driver_lives_is_refused(tmp_path):
    """From another folder, as from another clone: refused with the driver's host, pid and start; the first
    search then ends with exactly its trials."""
    (tmp_path / "s.yaml").write_text(STUDY.replace("max_epochs: 3", "max_epochs: 30"))  # outlives the resume
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = subprocess.Popen(search_cmd("run", "s.yaml", "--name", "dd2", "--tracking-uri", uri, "--quiet"),
                             cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list((tmp_path / "runs" / "dd2").glob("trial_*/checkpoint_*")):
            assert time.monotonic() < deadline and first.poll() is None, first.stderr.read() if first.poll() else ""
            time.sleep(0.5)
        other = tmp_path / "clone"
        other.mkdir()
        t0 = time.monotonic()
        resumed = subprocess.run(search_cmd("resume", "dd2", "--tracking-uri", uri, "--storage",
                                            str(tmp_path / "runs")), cwd=other, env=env(), capture_output=True,
                                 text=True, timeout=120)
        took = time.monotonic() - t0
        assert first.poll() is None, f"the first search ended before the resume was refused: {resumed.stderr}"
    finally:
        out, err = first.communicate(timeout=400)
    assert resumed.returncode == 2 and len(resumed.stderr.splitlines()) == 1, resumed.stderr
    line = resumed.stderr
    assert "search 'dd2' is running" in line and f"pid {first.pid} on {socket.gethostname()}" in line
    assert " since 20" in line and "last heartbeat" in line and took < 30
    assert not (other / "runs").exists()  # nothing written by the refused resume
    assert first.returncode == 0, err
    client = writer.client_for(uri)
    parent = schema.find_parent(client, "dd2")
    children = schema.child_runs(client, parent)
    assert parent.data.tags[schema.STATE] == "finished" and len(children) == 4
    assert all(c.data.tags[schema.STATE] == "completed" for c in children)
