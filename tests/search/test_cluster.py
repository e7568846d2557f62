"""The cluster path end to end (slow): a Ray head + 2 worker raylets on 127.0.0.1, MLflow on PostgreSQL.

One cluster (scripts/dev_cluster.py) serves the module: a search submitted with `ray job submit` and
recorded in the PostgreSQL-backed server; a driver interrupted, then resumed by a job from a fresh
checkout; a worker raylet killed under a running trial. Each checks MLflow: every trial exactly once,
contiguous steps. Set RS_DEV_CLUSTER=DIR to reuse a cluster started by `dev_cluster.py up --dir DIR`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import dev_cluster  # noqa: E402

STUDY = ROOT / "tests" / "cluster" / "tiny.yaml"
EPOCHS, TRIALS = 4, 4  # tests/cluster/tiny.yaml's budget

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not dev_cluster.postgres_available(),
                       reason="PostgreSQL server binaries not installed (apt-get install -y postgresql)"),
]


@pytest.fixture(scope="module")
def cluster():
    reuse = os.environ.get("RS_DEV_CLUSTER")
    if reuse:
        yield dev_cluster.load(Path(reuse))
        return
    root = Path(f"/tmp/rsdc-test-{os.getpid()}")  # short: Ray's unix socket paths live under it
    shutil.rmtree(root, ignore_errors=True)
    state = dev_cluster.up(root, workers=2, worker_cpus=1)
    try:
        yield state
    finally:
        dev_cluster.down(root)
        shutil.rmtree(root, ignore_errors=True)


def env_for(cluster) -> dict[str, str]:
    env = dev_cluster.base_env()
    env.update(PYTHONPATH=str(ROOT), RAY_ADDRESS=cluster["dashboard"], MLFLOW_TRACKING_URI=cluster["mlflow"])
    return env


def search_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", *args]


def submit(cluster, working_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir DIR -- python -m search.cli ARGS`, as the README says."""
    cmd = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--working-dir", str(working_dir), "--",
           "python", "-m", "search.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env_for(cluster), timeout=timeout)


def fresh_checkout(dest: Path) -> Path:
    """The project's tracked files in a new folder: what a second machine's checkout holds."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def trial_runs(cluster, name: str):
    from records import schema as tracking
    from records import writer

    client = writer.client_for(cluster["mlflow"])
    parent = tracking.find_parent(client, name)
    assert parent is not None, f"no parent run for {name}"
    return client, parent, tracking.child_runs(client, parent)


def assert_each_trial_once_contiguous(client, children, epochs_of=None) -> int:
    """Every trial has one run, and its val_acc steps are 1..n, each once. Returns the metric points."""
    from records import schema as tracking

    ids = [c.data.tags[tracking.TRIAL_ID] for c in children]
    assert len(ids) == len(set(ids)) == TRIALS, ids
    points = 0
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_acc")]
        n = epochs_of(c) if epochs_of else EPOCHS
        assert sorted(steps) == list(range(1, n + 1)), (c.data.tags[tracking.TRIAL_ID], steps)
        points += len(steps)
    return points


def unique(name: str) -> str:
    return f"{name}-{int(time.time())}"  # a reused cluster (RS_DEV_CLUSTER) keeps earlier searches


def test_job_submitted_search_is_recorded_in_postgres(cluster, tmp_path):
    assert cluster["backend_store_uri"].startswith("postgresql")
    name = unique("job-pg")
    t0 = time.monotonic()
    out = submit(cluster, ROOT, "run", str(STUDY.relative_to(ROOT)), "--address", "auto", "--storage",
                 cluster["storage"], "--name", name, "--quiet")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "View run" not in out.stdout and f"{cluster['mlflow']}/#/experiments/" in out.stdout
    client, parent, children = trial_runs(cluster, name)
    assert parent.data.tags["rs.state"] == "finished"
    points = assert_each_trial_once_contiguous(client, children)
    metrics = sum(len(c.data.metrics) for c in children)
    print(f"\n{name}: {1 + len(children)} runs, {metrics} metric keys, {points} val_acc points, "
          f"{time.monotonic() - t0:.0f} s via ray job submit")
    # `show` and `export` read the same server from any directory.
    env = env_for(cluster)
    shown = subprocess.run(search_cmd("show", name), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and name in shown.stdout, shown.stderr
    exported = subprocess.run(search_cmd("export", name, "--out", "best.yaml"), cwd=tmp_path, env=env,
                              capture_output=True, text=True)
    assert exported.returncode == 0 and (tmp_path / "best.yaml").is_file(), exported.stderr


def test_interrupted_driver_resumes_from_a_fresh_checkout(cluster, tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    name = unique("job-resume")
    proc = subprocess.Popen(search_cmd("run", str(STUDY), "--address", cluster["gcs"], "--storage",
                                       cluster["storage"], "--name", name, "--quiet"),
                            cwd=first, env=env_for(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    experiment = Path(cluster["storage"]) / name
    deadline = time.monotonic() + 180
    while not list(experiment.glob("trial_*/checkpoint_*")):
        assert time.monotonic() < deadline and proc.poll() is None, "the search never checkpointed"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    shutil.rmtree(first)  # the driver's folder is gone: resume needs only storage + MLflow
    client, parent, children = trial_runs(cluster, name)
    assert parent.data.tags["rs.state"] == "interrupted"
    assert not [c for c in children if c.info.status == "RUNNING"]  # Ctrl-C leaves no trial "running"

    # A job runs in a new temporary copy of a fresh checkout: the search is found through MLflow alone
    # (the head's MLFLOW_TRACKING_URI), its Tune state in the storage recorded there.
    checkout = fresh_checkout(tmp_path / "checkout")
    out = submit(cluster, checkout, "resume", name, "--address", "auto", "--quiet")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client, parent, children = trial_runs(cluster, name)
    assert parent.data.tags["rs.state"] == "finished"
    assert_each_trial_once_contiguous(client, children)
    assert all(c.data.tags["rs.state"] == "completed" for c in children)
    redone = sum(int(c.data.tags.get("rs.epochs_redone", 0)) for c in children)
    print(f"\n{name}: resumed from a fresh checkout; {len(children)} trial runs, epochs trained again "
          f"(logged once): {redone}")


def parent_pid(pid: int) -> int | None:
    try:  # /proc/PID/stat: "pid (comm) state ppid ..."; comm may contain spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def raylet_of(pid: int, cluster) -> tuple[str, int] | None:
    """The worker node (name, raylet PID) whose raylet is an ancestor of process PID."""
    worker_pids = {w["pid"]: w["name"] for w in cluster["workers"]}
    child, current = None, pid
    while current and current > 1:
        if current in worker_pids and child is not None:
            return worker_pids[current], child  # the `ray start --block` process's child is the raylet
        child, current = current, parent_pid(current)
    return None


def test_killed_worker_raylet_trial_continues_on_other_node(cluster, tmp_path):
    name = unique("job-nodeloss")
    proc = subprocess.Popen(search_cmd("run", str(STUDY), "--address", cluster["gcs"], "--storage",
                                       cluster["storage"], "--name", name, "--quiet", "--max-concurrent", "2"),
                            cwd=tmp_path, env=env_for(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    experiment = Path(cluster["storage"]) / name
    deadline, victim = time.monotonic() + 180, None
    while victim is None:  # the first trial that has reported an epoch, and the raylet it runs under
        assert time.monotonic() < deadline and proc.poll() is None, "no trial reported an epoch"
        for result in experiment.glob("trial_*/result.json"):
            lines = result.read_text().splitlines()
            if lines and json.loads(lines[-1])["training_iteration"] < EPOCHS:
                last = json.loads(lines[-1])
                node = raylet_of(last["pid"], cluster)
                if node:
                    victim = (result.parent.name.removeprefix("trial_"), last["training_iteration"], *node)
                    break
        time.sleep(0.2)
    trial_id, epoch_at_kill, node_name, raylet_pid = victim
    os.kill(raylet_pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    dev_cluster.start_worker(Path(cluster["dir"]), cluster)  # later tests get their two workers back
    assert proc.returncode == 0, err[-3000:]

    client, parent, children = trial_runs(cluster, name)
    assert_each_trial_once_contiguous(client, children)
    lines = [json.loads(x) for x in (experiment / f"trial_{trial_id}" / "result.json").read_text().splitlines()]
    iterations = [r["training_iteration"] for r in lines]
    # The first result after the restart continues from the restored checkpoint's epoch.
    after = next((i for i, r in enumerate(lines) if i > 0 and r["iterations_since_restore"] == 1), None)
    seen = [(r["training_iteration"], r["iterations_since_restore"]) for r in lines]
    assert after is not None, f"trial {trial_id} was never restarted: (iteration, since restore) = {seen}"
    restored_from, reached = lines[after]["training_iteration"] - 1, lines[after - 1]["training_iteration"]
    redone = reached - restored_from  # epochs reported before the kill and trained again after it
    assert redone == 0 and iterations == list(range(1, EPOCHS + 1)), iterations
    run = next(c for c in children if c.data.tags["rs.trial_id"] == trial_id)
    assert run.data.tags["rs.restarts"] == "1"
    assert run.data.tags["rs.restart_1"].startswith(f"from checkpoint epoch {restored_from}:")
    assert run.data.tags["rs.state"] == "completed"
    print(f"\nnode loss: killed {node_name} (raylet {raylet_pid}) after epoch {epoch_at_kill} of trial {trial_id}; "
          f"restored from epoch {restored_from} on the other node, finished {max(iterations)} epochs; "
          f"epochs redone: {redone}; restart tag: {run.data.tags['rs.restart_1'][:120]}")
