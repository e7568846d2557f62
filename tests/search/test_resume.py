"""A search interrupted mid-way resumes: nothing lost, nothing duplicated (slow: two Ray start-ups)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

STUDY = textwrap.dedent("""\
    name: resumable
    family: optimization
    dataset: digits
    budget: {num_samples: 4, max_epochs: 6, scheduler: none}
    resources: {cpus: 1, gpus: 0}
    fixed: {model: cnn, filters: [8, 16], batch_size: 32, optimizer: adam, max_train_samples: 600}
    search:
      lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}
""")


@pytest.mark.slow
def test_interrupted_search_resumes_without_duplicates(tmp_path):
    from records import schema, writer

    (tmp_path / "s.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "search", "run", "s.yaml", "--name", "r1", "--tracking-uri", uri, "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs" / "r1").glob("trial_*/checkpoint_*")):  # some trial has checkpointed
        assert time.monotonic() < deadline and proc.poll() is None, "the search never checkpointed"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "search resume r1" in err

    client = writer.client_for(uri)
    parent = schema.find_parent(client, "r1")
    assert parent.data.tags[schema.STATE] == "interrupted"

    resumed = subprocess.run([sys.executable, "-m", "search", "resume", "r1", "--quiet"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    parent = schema.find_parent(client, "r1")
    assert parent.data.tags[schema.STATE] == "finished"
    children = schema.child_runs(client, parent)
    trial_ids = [c.data.tags[schema.TRIAL_ID] for c in children]
    assert len(trial_ids) == len(set(trial_ids)) == 4  # one run per trial, none opened twice
    for child in children:
        assert child.data.tags[schema.STATE] == "completed"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(set(steps)) == list(range(1, 7))  # every epoch recorded, the resumed ones continue


@pytest.mark.slow
def test_resumed_progress_counts_what_finished_before(tmp_path):
    """Interrupted after its first trial ended, resumed: the last progress line says 4/4 with 4 done (it said
    3/4 before, counting from zero); `search ls` showed the best so far while the search ran."""
    from records import schema, writer

    (tmp_path / "s.yaml").write_text(STUDY.replace("max_epochs: 6", "max_epochs: 20"))  # outlives `search ls`
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "search", "run", "s.yaml", "--name", "r2", "--tracking-uri", uri, "--max-concurrent", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = writer.client_for(uri)
    deadline = time.monotonic() + 180
    while True:  # the first trial has ended and the second has checkpointed
        parent = schema.find_parent(client, "r2")
        children = schema.child_runs(client, parent) if parent else []
        done = [c for c in children if c.data.tags.get(schema.STATE) == "completed"]
        if done and len(list((tmp_path / "runs" / "r2").glob("trial_*/checkpoint_*"))) > 3:
            break
        assert time.monotonic() < deadline and proc.poll() is None, "no trial ended"
        time.sleep(0.5)
    ls = subprocess.run([sys.executable, "-m", "search", "ls", "--tracking-uri", uri], cwd=tmp_path,
                        capture_output=True, text=True, timeout=120)
    row = next(line for line in ls.stdout.splitlines() if line.split()[:1] == ["r2"])
    assert row.split()[-3] != "None" and float(row.split()[-3]) > 0, ls.stdout  # best, then the start's date and time
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130, "the search ended before it was interrupted"
    resumed = subprocess.run([sys.executable, "-m", "search", "resume", "r2"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    last = [line for line in resumed.stdout.splitlines() if line.startswith("[")][-1]
    assert "4 done" in last and "| 4/4 |" in last and "ETA 0:00" in last, last
