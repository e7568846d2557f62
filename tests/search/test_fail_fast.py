"""Failing fast and saying why (issue 17 §3): a store that refuses or does not answer, a study that cannot
fit this machine, a jobs-API $RAY_ADDRESS, the cluster files' setup. Each refusal is one line, exit 2, in
seconds; nothing echoes a password. The PostgreSQL and Ray cases that need servers are in test_secrets.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from search import cluster, machine, runner
from search.cli import main
from search.errors import SearchError

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "spaces" / "quickstart.yaml"
PASSWORD = "s3cret-Pw-17"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search_cli(*argv: str, cwd: Path, env: dict | None = None,
               timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    base = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd), "RAY_ADDRESS": "local"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "search.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env={**base, **(env or {})}, timeout=timeout)
    return proc, time.monotonic() - t0


def assert_one_line_refusal(proc, seconds: float, limit: float, *needles: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and PASSWORD not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in err, err
    assert seconds < limit, seconds


@pytest.mark.parametrize("netloc", [f"mlflow:{PASSWORD}@", "mlflow@"], ids=["with_password", "password_less"])
def test_unreachable_postgres_is_one_line_within_seconds(tmp_path, netloc):
    pytest.importorskip("psycopg2")
    port = closed_port()
    uri = f"postgresql://{netloc}127.0.0.1:{port}/mlflow"
    proc, seconds = search_cli("ls", "--tracking-uri", uri, cwd=tmp_path)
    assert_one_line_refusal(proc, seconds, 10, f"127.0.0.1:{port}", "Connection refused")
    assert "postgresql://mlflow@127.0.0.1" in proc.stderr  # the URI as it may be shown: no password


def test_silent_tracking_server_is_one_line_within_seconds(tmp_path):
    """A server that accepts the connection and never answers (a hung host, a wrong tunnel)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        proc, seconds = search_cli("ls", "--tracking-uri", uri, cwd=tmp_path)
    assert_one_line_refusal(proc, seconds, 10, uri, "no answer within 5 s")


def test_unreachable_tracking_server_in_the_environment_is_named(tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    proc, seconds = search_cli("ls", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert_one_line_refusal(proc, seconds, 10, "MLFLOW_TRACKING_URI: cannot reach", "Connection refused")


def gpu_study(tmp_path: Path) -> tuple[Path, int]:
    text = QUICK.read_text()
    assert "gpus: 0" in text
    path = tmp_path / "gpu.yaml"
    path.write_text(text.replace("gpus: 0", "gpus: 1"))
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "gpus: 1" in x)
    return path, line


CPU_MACHINE = {machine.CPU: 2.0, machine.GPU: 0.0}


def test_gpu_study_on_a_cpu_machine_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(machine, "local_resources", lambda: CPU_MACHINE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "local")
    path, line = gpu_study(tmp_path)
    t0 = time.monotonic()
    assert main(["run", str(path), "--name", "gpu"]) == 2
    assert time.monotonic() - t0 < 5
    err = capsys.readouterr().err
    assert f"resources.gpus (line {line}): a trial asks for 1 GPU but this machine has 0" in err
    assert not ray.is_initialized()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu.yaml"]  # no runs/, no mlflow.db


def test_validate_checks_resources_against_this_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(machine, "local_resources", lambda: CPU_MACHINE)
    path, line = gpu_study(tmp_path)
    # A GPU study is valid (it is written for a cluster) and the output says it does not fit here, at its line.
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert "valid" in captured.out and "a trial needs 1 CPU and 1 GPU; checked against this machine" in captured.out
    assert "does not fit this machine" in captured.err
    assert f"resources.gpus (line {line}): a trial asks for 1 GPU but this machine has 0" in captured.err
    assert main(["validate", str(QUICK)]) == 0
    captured = capsys.readouterr()
    assert "a trial needs 1 CPU and 0 GPU; checked against this machine (2 CPUs, 0 GPUs)" in captured.out
    assert "does not fit" not in captured.err
    monkeypatch.setattr(machine, "local_resources", lambda: {machine.CPU: 0.5, machine.GPU: 0.0})
    assert main(["validate", str(QUICK)]) == 0  # the boundary: 1 CPU asked, half a CPU here
    assert "resources.cpus" in capsys.readouterr().err


def test_validate_against_a_cluster_that_lacks_the_gpus_exits_2(tmp_path, monkeypatch, capsys):
    """With --address the user named where the study will run: not fitting there is an error."""
    from search import preflight

    monkeypatch.setattr(preflight, "check_address", lambda address, what="--address": None)
    monkeypatch.setattr(machine, "cluster_resources", lambda address: {machine.CPU: 16.0, machine.GPU: 0.0})
    path, line = gpu_study(tmp_path)
    assert main(["validate", str(path), "--address", "10.0.0.1:6379"]) == 2
    err = capsys.readouterr().err
    assert f"resources.gpus (line {line}): a trial asks for 1 GPU but the cluster at 10.0.0.1:6379 has 0" in err


def test_local_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert machine.local_resources()[machine.GPU] == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert machine.local_resources()[machine.GPU] == 0
    assert machine.local_resources()[machine.CPU] == len(os.sched_getaffinity(0))


def test_jobs_api_ray_address_is_ignored_with_a_note(monkeypatch, capsys):
    """docs/cluster.md exports RAY_ADDRESS=http://HOST:8265 for `ray job submit`; a later local run still works."""
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.setattr("ray._private.services.find_bootstrap_address", lambda temp_dir: None)
    assert cluster.running_local_ray() is None
    assert "is the jobs API's address" in capsys.readouterr().err
    assert cluster.running_local_ray(quiet=True) is None and capsys.readouterr().err == ""


@pytest.mark.parametrize("file", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_files_update_apt_and_keep_passwords_off_command_lines(file):
    doc = yaml.safe_load((ROOT / file).read_text())
    head = doc["head_setup_commands"]
    install = next(i for i, c in enumerate(head) if "apt-get install" in c)
    assert any("apt-get update" in c for c in head[:install])
    server = next(c for c in doc["head_start_ray_commands"] if "mlflow server" in c)
    command_line = server.split("mlflow server", 1)[1]
    assert "db_password" not in command_line and "PGPASSFILE=" in server and "--app-name basic-auth" in server
    assert not any("PASSWORD '$(cat" in c for c in head)  # psql reads the CREATE ROLE from stdin
    assert any("chmod 600 ~/.ray/auth_token" in c for c in doc["setup_commands"])


def test_dev_cluster_keeps_the_database_password_in_a_private_file(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import dev_cluster

    (tmp_path / "pg").mkdir()
    pgpass = dev_cluster.pgpass_file(tmp_path, 5999, PASSWORD)
    assert pgpass.stat().st_mode & 0o777 == 0o600 and PASSWORD in pgpass.read_text()
    cmd = dev_cluster.mlflow_server_cmd(tmp_path, dev_cluster.backend_uri(tmp_path, 5999), 5000)
    assert "postgresql+psycopg2://mlflow@127.0.0.1:5999/mlflow" in cmd and not any(PASSWORD in c for c in cmd)
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("t")
    token.chmod(0o644)
    dev_cluster.secure_ray_token(tmp_path)
    assert token.stat().st_mode & 0o777 == 0o600


def test_validate_with_address_checks_the_cluster_instead(tmp_path, monkeypatch, capsys):
    from search import preflight

    asked = []
    monkeypatch.setattr(preflight, "check_address", lambda address, what="--address": asked.append(address))
    monkeypatch.setattr(machine, "local_resources", lambda: CPU_MACHINE)
    monkeypatch.setattr(machine, "cluster_resources", lambda address: {machine.CPU: 16.0, machine.GPU: 2.0})
    path, _ = gpu_study(tmp_path)
    assert main(["validate", str(path), "--address", "10.0.0.1:6379"]) == 0
    assert asked == ["10.0.0.1:6379"]
    out = capsys.readouterr().out
    assert "checked against the cluster at 10.0.0.1:6379 (16 CPUs, 2 GPUs)" in out and "use --address" not in out


@pytest.mark.slow
def test_local_search_runs_with_a_jobs_api_ray_address(tmp_path):
    """The docs' `export RAY_ADDRESS=http://127.0.0.1:8265`, then a plain local `search run`."""
    home = Path(tempfile.mkdtemp(prefix="rs17r-"))  # short: Ray's socket paths
    try:
        proc, _ = search_cli("run", str(QUICK), "--num-samples", "1", "--name", "r", "--quiet", cwd=tmp_path,
                             env={"RAY_ADDRESS": "http://127.0.0.1:8265", "HOME": str(home), "RAY_TMPDIR": str(home)},
                             timeout=600)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RAY_ADDRESS=http://127.0.0.1:8265 is the jobs API's address" in proc.stderr
    assert "top 1 of 1 trials" in proc.stdout


def test_resume_without_tracking_uri_keeps_the_recorded_store(tmp_path, monkeypatch):
    """The store check must not pin `resume` to the default store: it reads the one the search recorded."""
    seen = {}

    def resume(name, **kwargs):
        seen.update(kwargs)
        raise SearchError("stop here")

    monkeypatch.setattr(runner, "resume_search", resume)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["resume", "some-search"]) == 2
    assert seen["tracking_uri"] is None
