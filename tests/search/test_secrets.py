"""Secrets stay secret (issue 17 §2): a password given in a tracking URI is in no file a search writes and
in nothing it prints; MLflow's basic-auth server refuses strangers and records a signed-in search; a
private Ray listens on 127.0.0.1 only. The fast cases check the URI handling itself; the slow ones start
a private PostgreSQL (scripts/dev_cluster.py's), an MLflow server, or Ray."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from search import credentials
from search.cli import ui_hint
from search.errors import SearchError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import dev_cluster  # noqa: E402

PASSWORD = "Pw17-not-for-files"


# ---------------------------------------------------------------- the URI handling (fast)
def test_password_moves_to_the_variable_its_client_reads():
    env: dict[str, str] = {}
    uri = f"postgresql+psycopg2://mlflow:{PASSWORD}@db.example:5432/mlflow"
    assert credentials.adopt_password(uri, environ=env) == "postgresql+psycopg2://mlflow@db.example:5432/mlflow"
    assert env == {"PGPASSWORD": PASSWORD}
    env = {}
    assert credentials.adopt_password(f"https://alice:{PASSWORD}@mlflow.example", environ=env) == "https://mlflow.example"
    assert env == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    env = {}
    assert credentials.adopt_password("postgresql://mlflow@db/mlflow", environ=env) == "postgresql://mlflow@db/mlflow"
    assert env == {}  # nothing to move: libpq finds $PGPASSWORD or ~/.pgpass itself


def test_two_passwords_or_an_unsupported_scheme_are_refused_without_echoing_them():
    with pytest.raises(SearchError, match=r"\$PGPASSWORD holds another") as e:
        credentials.adopt_password(f"postgresql://mlflow:{PASSWORD}@db/mlflow", environ={"PGPASSWORD": "other"})
    assert PASSWORD not in str(e.value) and "mlflow:***@db" in str(e.value)
    with pytest.raises(SearchError, match="holds a password") as e:
        credentials.adopt_password(f"mysql://root:{PASSWORD}@db/mlflow", environ={})
    assert PASSWORD not in str(e.value)


def test_printed_uris_are_redacted():
    assert credentials.redacted(f"postgresql://u:{PASSWORD}@h/db") == "postgresql://u:***@h/db"
    assert credentials.redacted("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    for uri in (f"postgresql://u:{PASSWORD}@h/db", f"http://u:{PASSWORD}@127.0.0.1:5000"):
        hint = ui_hint(uri, "1", "abc")
        assert PASSWORD not in hint and "***" in hint and "abc" in hint
    assert credentials.scrub(f"FATAL: {PASSWORD} refused", PASSWORD) == "FATAL: *** refused"


def test_search_json_is_written_without_the_password(tmp_path):
    """runs/NAME/search.json as written, also when the metadata came from an older search.json that held one."""
    from search.driver import SearchMeta

    meta = SearchMeta("n", "study.yaml", f"postgresql+psycopg2://mlflow:{PASSWORD}@db/mlflow", "rid", "tpe", 2, None, "/s")
    meta.save(tmp_path)
    written = json.loads((tmp_path / "search.json").read_text())
    assert written["tracking_uri"] == "postgresql+psycopg2://mlflow@db/mlflow"
    assert PASSWORD not in (tmp_path / "search.json").read_text()


# ---------------------------------------------------------------- PostgreSQL, MLflow server, Ray (slow)
needs_postgres = pytest.mark.skipif(not dev_cluster.postgres_available(),
                                    reason="PostgreSQL server binaries not installed (apt-get install -y postgresql)")
STUDY = """\
name: secrets_tiny
family: optimization
dataset: digits
budget: {num_samples: 2, max_epochs: 2, scheduler: none}
resources: {cpus: 1, gpus: 0}
fixed: {model: cnn, filters: [4, 8], batch_size: 64}
search:
  lr: {type: loguniform, low: 1.0e-3, high: 0.1}
seed: 0
"""


@pytest.fixture(scope="module")
def workdir():
    """A short folder (Ray's socket paths live under its temp dir) that holds everything a search writes."""
    root = Path(tempfile.mkdtemp(prefix="rs17-", dir="/tmp"))
    root.chmod(0o755)  # the postgres user reaches its data folder
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(workdir):
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver comes with the cluster extra")
    port = dev_cluster.free_port()
    pid = dev_cluster.start_postgres(workdir / "db", port, PASSWORD) if (workdir / "db").mkdir() is None else None
    (workdir / "db" / "pg" / "pgpass").unlink()  # the test gives the password only in the URI
    yield f"mlflow:{PASSWORD}@127.0.0.1:{port}/mlflow"
    subprocess.run(dev_cluster.as_pg_user() + [dev_cluster.pg_bin("pg_ctl"), "-D", str(workdir / "db" / "pg" / "data"),
                                               "-m", "fast", "-w", "stop"], capture_output=True)
    assert not dev_cluster.pid_alive(pid)


def search_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no PGPASSWORD, no ~/.pgpass, Ray's files under ``home``."""
    return {"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home),
            "RAY_ADDRESS": "local", "RAY_TMPDIR": str(home / "ray"), "RAY_USAGE_STATS_ENABLED": "0", **extra}


def search(cwd: Path, env: dict[str, str], *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def files_holding(folder: Path, secret: str) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret.encode() in path.read_bytes():
                    found.append(str(path))
            except OSError:
                pass  # a socket, a file Ray removed meanwhile
    return found


@pytest.mark.slow
@needs_postgres
@pytest.mark.parametrize("given", ["--tracking-uri", "MLFLOW_TRACKING_URI"])
def test_search_on_postgres_writes_and_prints_no_password(workdir, postgres, given):
    """The issue's grep: every file under the search's folder (runs/, tuner.pkl, Ray's session files, the
    artifacts, best.yaml) and everything it printed, for the password; and `ls`/`show` afterwards."""
    cwd = workdir / ("arg" if given.startswith("--") else "env")  # short: Ray's socket paths (107 bytes)
    cwd.mkdir()
    (cwd / "study.yaml").write_text(STUDY)
    uri = f"postgresql://{postgres}"
    argv = ["run", "study.yaml", "--name", f"sec-{cwd.name}", "--quiet"]
    env = search_env(cwd)
    if given == "--tracking-uri":
        argv += ["--tracking-uri", uri]
    else:
        env["MLFLOW_TRACKING_URI"] = uri
    out = search(cwd, env, *argv)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "top 2 of 2 trials" in out.stdout
    assert PASSWORD not in out.stdout + out.stderr
    meta = json.loads((cwd / "runs" / f"sec-{cwd.name}" / "search.json").read_text())
    assert meta["tracking_uri"] == f"postgresql+psycopg2://{postgres.replace(':' + PASSWORD, '')}"
    assert (cwd / "runs" / f"sec-{cwd.name}" / "tuner.pkl").is_file() or list(cwd.rglob("tuner.pkl"))
    assert list(cwd.rglob("ray/session_*")), "Ray's files should be under the search's folder"
    assert files_holding(cwd, PASSWORD) == []
    # Read back with the password only in the environment: from the URI as the search wrote it down.
    shown = search(cwd, search_env(cwd, PGPASSWORD=PASSWORD), "show", f"sec-{cwd.name}", "--tracking-uri",
                   meta["tracking_uri"], timeout=120)
    assert shown.returncode == 0 and "top 2 of 2 trials" in shown.stdout, shown.stderr


@pytest.mark.slow
@needs_postgres
@pytest.mark.parametrize("argv", [["ls"], ["run", "study.yaml"]], ids=["ls", "run"])
@pytest.mark.parametrize("password", ["wrong-Pw17", None], ids=["wrong_password", "no_password"])
def test_refused_postgres_login_is_one_line_within_seconds(workdir, postgres, tmp_path, argv, password):
    (tmp_path / "study.yaml").write_text(STUDY)
    netloc = postgres.replace(PASSWORD, password) if password else postgres.replace(f":{PASSWORD}", "")
    t0 = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="rs17h-"))
    out = search(tmp_path, search_env(home), *argv, "--tracking-uri", f"postgresql://{netloc}", timeout=60)
    shutil.rmtree(home)
    seconds = time.monotonic() - t0
    err = out.stderr.strip()
    assert out.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert seconds < 10, seconds
    cause = "password authentication failed" if password else "no password supplied"
    assert cause in err and "PGPASSWORD" in err, err
    assert (password or PASSWORD) not in out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # nothing written


@pytest.fixture
def auth_server(tmp_path):
    """MLflow's basic-auth app on sqlite, as dev_cluster.py --auth starts it."""
    pytest.importorskip("flask_wtf", reason="the basic-auth app needs the cluster extra (mlflow[auth])")
    port = dev_cluster.free_port()
    (tmp_path / "artifacts").mkdir()
    env = {**os.environ, **dev_cluster.basic_auth(tmp_path)}
    log = tmp_path / "mlflow.log"
    proc = dev_cluster.spawn(dev_cluster.mlflow_server_cmd(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", port, auth=True),
                             log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        dev_cluster.wait_for(lambda: dev_cluster.http_ok(f"{url}/health"), "mlflow server", 120, proc, log)
        login = dict(re.findall(r"export (\w+)=(\S+)", (tmp_path / dev_cluster.AUTH_ENV).read_text()))
        yield url, login
    finally:
        dev_cluster.stop_groups([proc.pid])


@pytest.mark.slow
def test_basic_auth_server_refuses_strangers_and_records_a_signed_in_search(auth_server, tmp_path):
    url, login = auth_server
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/create", data=b'{"name": "intruder"}',
                                     headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    (tmp_path / "study.yaml").write_text(STUDY.replace("num_samples: 2", "num_samples: 1"))
    t0 = time.monotonic()
    out = search(tmp_path, search_env(tmp_path), "run", "study.yaml", "--tracking-uri", url, "--quiet", timeout=60)
    assert out.returncode == 2 and "refused our credentials" in out.stderr and time.monotonic() - t0 < 10, out.stderr
    home = Path(tempfile.mkdtemp(prefix="rs17a-"))  # short: Ray's socket paths live under $RAY_TMPDIR
    signed_in = search_env(home, **login)
    out = search(tmp_path, signed_in, "run", "study.yaml", "--tracking-uri", url, "--name", "authed", "--quiet")
    shutil.rmtree(home, ignore_errors=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert login["MLFLOW_TRACKING_PASSWORD"] not in out.stdout + out.stderr
    shown = search(tmp_path, signed_in, "show", "authed", "--tracking-uri", url, timeout=120)
    assert shown.returncode == 0 and "top 1 of 1 trials" in shown.stdout, shown.stderr


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Ray's GCS, raylet, workers), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2)")
def test_private_ray_listens_on_loopback_only(monkeypatch):
    import ray

    from search import cluster

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "local")
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():
        token.chmod(0o644)  # as Ray writes it
    cluster.init_ray(None)
    try:
        ray.get(ray.remote(lambda: 1).remote())  # a worker process started and listening too
        ours = descendants(os.getpid()) | {os.getpid()}
        listening = [line.split() for line in subprocess.run(["ss", "-ltnpH"], capture_output=True,
                                                             text=True).stdout.splitlines()]
        mine = [(f[3], f[-1]) for f in listening if any(f"pid={p}," in f[-1] for p in ours)]
        assert len(mine) >= 3, mine  # the GCS, the raylet, the driver and the worker at least
        exposed = [m for m in mine if not m[0].startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))]
        assert not exposed, exposed
        assert os.environ.get(cluster.LOOPBACK_SETTING) is None  # put back once Ray runs
        assert (Path.home() / ".ray" / "auth_token").stat().st_mode & 0o777 == 0o600
    finally:
        ray.shutdown()
