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
    from records import schema

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

    client = schema.client_for(uri)
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
