"""What a user reads about a search: the MLflow UI links (checked in headless Chromium), the description,
the commit a job-submitted search records, and the best so far of a running search."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from records import schema, writer
from spaces.study import parse_study

STUDY = textwrap.dedent("""\
    name: readable
    family: optimization
    dataset: digits
    description: Which learning rate trains the small CNN on digits best.
    budget: {num_samples: 2, max_epochs: 2, scheduler: none}
    fixed: {model: cnn, filters: [8, 16]}
    search:
      lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}
""")


def a_search(tmp_path, name="read1"):
    """A parent run as ``search run`` writes it, with two trial runs (one finished, one running)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = writer.client_for(uri)
    (tmp_path / "s.yaml").write_text(STUDY)
    parent = writer.start_parent(client, parse_study(STUDY), name, tmp_path / "s.yaml", sampler="tpe")
    exp = client.get_run(parent).info.experiment_id
    for tid, best, state in (("t1", 0.61, "completed"), ("t2", 0.93, "running"), ("t3", 0.72, "completed")):
        run = client.create_run(exp, run_name=f"{name}/{tid}", tags={schema.PARENT: parent, schema.TRIAL_ID: tid,
                                                                    schema.STATE: state}).info.run_id
        client.log_metric(run, schema.best_key("val_acc"), best, step=2)
        client.log_metric(run, schema.best_key("epoch"), 2, step=2)
        client.log_metric(run, "val_acc", best, step=2)
    return uri, client, parent, exp


def test_ui_links_open_the_training_view():
    assert schema.ui_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert schema.ui_url("http://h:5000", "3") == "http://h:5000/#/experiments/3/runs?workflowType=machine_learning"


def test_show_prints_the_link_run_prints(tmp_path, capsys):
    from search.cli import main, ui_hint

    uri, _, parent, exp = a_search(tmp_path)
    assert main(["show", "read1", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    link = f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{parent}?workflowType=machine_learning"
    assert out.rstrip().endswith(link) and ui_hint(uri, exp, parent) in out
    assert f"MLflow: open {schema.ui_url('http://10.0.0.1:5000', exp, parent)} " in ui_hint("http://10.0.0.1:5000",
                                                                                         exp, parent)


def test_the_study_description_is_the_parent_runs_description(tmp_path):
    _, client, parent, _ = a_search(tmp_path)
    assert client.get_run(parent).data.tags["mlflow.note.content"] == \
        "Which learning rate trains the small CNN on digits best."


def test_a_job_records_the_commit_its_submitter_set(monkeypatch, tmp_path):
    """Under `ray job submit --working-dir .` the code may run from a copy without .git: $RS_GIT_COMMIT (set by
    scripts/submit.sh from the submitting checkout) is what the search records."""
    monkeypatch.setenv(writer.GIT_COMMIT_ENV, "0123abcd-dirty")
    _, client, parent, _ = a_search(tmp_path)
    assert client.get_run(parent).data.tags["rs.git_commit"] == "0123abcd-dirty"
    monkeypatch.delenv(writer.GIT_COMMIT_ENV)
    assert writer.git_commit() not in ("0123abcd-dirty", "")


def test_submit_script_passes_the_checkouts_commit(tmp_path):
    """scripts/submit.sh puts `git rev-parse HEAD` (+ -dirty) into the job's environment; run with a stand-in `ray`."""
    root = Path(__file__).resolve().parents[2]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ray").write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    (fake / "ray").chmod(0o755)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    out = subprocess.run(["sh", str(root / "scripts" / "submit.sh"), "search", "run", "spaces/quickstart.yaml"],
                         cwd=root, capture_output=True, text=True, env={"PATH": f"{fake}:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    assert args[:4] == ["job", "submit", "--working-dir", "."] and args[-4:] == ["--", "search", "run",
                                                                                "spaces/quickstart.yaml"]
    env = args[args.index("--runtime-env-json") + 1]
    assert f'"RS_GIT_COMMIT": "{head}' in env


def test_ls_shows_the_best_so_far_of_a_running_search(tmp_path):
    """The parent holds no best until the search ends; the trials that ended so far do (the running one's
    0.93 is not yet a score)."""
    from search.queries import list_searches

    uri, *_ = a_search(tmp_path)
    row = list_searches(uri).set_index("search").loc["read1"]
    assert row["status"] == "running" and row["best"] == pytest.approx(0.72)


# ---------------------------------------------------------------- the UI itself
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dom_of(url: str, profile: Path) -> str:
    """The page as headless Chromium renders it in a fresh profile (what a new user's browser shows)."""
    out = subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium binary (apt-get install chromium)")
def test_links_open_the_runs_of_the_training_view_in_chromium(tmp_path):
    uri, client, parent, exp = a_search(tmp_path)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(0.5)
        run_page = dom_of(schema.ui_url(base, exp, parent), tmp_path / "p1")
        runs_page = dom_of(schema.ui_url(base, exp), tmp_path / "p2")
        bare = dom_of(f"{base}/#/experiments/{exp}/runs", tmp_path / "p3")  # the link of old
    finally:
        server.terminate()
        server.wait(30)
    assert "Evaluation runs" in bare  # the GenAI view, as a fresh browser opened it before
    for page in (run_page, runs_page):
        assert "Evaluation runs" not in page and "Evaluations" not in page and ">Runs<" in page
    assert "read1" in run_page and "Which learning rate trains the small CNN on digits best." in run_page
    assert "read1" in runs_page
