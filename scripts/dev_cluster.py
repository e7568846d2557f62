"""A cluster shaped like cluster.yaml's, on one machine: for development and the slow cluster tests.

    python scripts/dev_cluster.py up [--dir D] [--workers 2] [--worker-cpus 1]
    python scripts/dev_cluster.py status --dir D
    python scripts/dev_cluster.py down --dir D

``up`` starts a Ray head (0 CPUs for trials, dashboard + jobs API on 127.0.0.1), N worker raylets,
PostgreSQL on a private port in D/pg, and ``mlflow server`` on that database with proxied artifacts
(D/artifacts). Every process listens on 127.0.0.1 only. It writes D/cluster.json (ports, PIDs) and
D/cluster.env (``source`` it: RAY_ADDRESS, RS_RAY_GCS, MLFLOW_TRACKING_URI, RAY_AUTH_MODE). The database
password lives only in D/pg/pgpass (mode 0600), which ``mlflow server`` reads through $PGPASSFILE: it is
on no command line (``ps``) and in no other file. ``--auth`` serves MLflow's basic-auth app instead
(docs/cluster.md: a shared cluster); its admin credentials are in D/mlflow-auth.env (mode 0600).
``down`` stops exactly the processes ``up`` started, by their PIDs (never ``ray stop``, which would
stop every Ray cluster on the machine). Ray's token auth is on (RAY_AUTH_MODE=token, ~/.ray/auth_token).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
STATE, ENV = "cluster.json", "cluster.env"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(RuntimeError):
    pass


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: PATH first, then Debian's versioned folders."""
    found = shutil.which(name)
    if found:
        return found
    for d in PG_BIN_DIRS:
        if (d / name).is_file():
            return str(d / name)
    return None


def postgres_available() -> bool:
    return all(pg_bin(n) for n in ("initdb", "pg_ctl", "postgres"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_exe() -> str:
    return str(Path(sys.executable).with_name("mlflow"))


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "token"  # Ray 2.60: nodes must agree on token auth; the token is ~/.ray/auth_token
    # Ray rewrites 127.0.0.1 to the machine's network address and then binds its gRPC servers to 0.0.0.0.
    # With this off, every node, driver and worker keeps 127.0.0.1 and binds there; the multi-node guard
    # that comes with it is lifted for our worker nodes only (see ray_node()).
    env[LOOPBACK_ENV] = "0"
    # Job entrypoints (`python -m search.cli ...`, `search ...`) find this environment's interpreter first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def wait_for(check, what: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.is_file() else ""
            raise ClusterError(f"{what} exited with code {proc.returncode}\n{tail}")
        time.sleep(0.5)
    raise ClusterError(f"{what} not ready after {timeout:.0f} s" + (f" (log: {log})" if log else ""))


def spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A process in its own session: its PID is also its process group, which ``down`` signals."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------ Ray
def ray_node_cmd(*, head: bool, gcs_port: int, cpus: int, temp_dir: Path, dashboard_port: int | None = None,
                 object_store: int = 80_000_000) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "ray-node", "start", "--block",
           "--node-ip-address", "127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
           f"--object-store-memory={object_store}", "--disable-usage-stats",
           f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
           f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]
    if head:
        cmd += ["--head", f"--port={gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
                f"--temp-dir={temp_dir}"]
    else:  # its own temp dir: raylets on one IP that share one pick the same socket names when started together
        cmd += [f"--address=127.0.0.1:{gcs_port}", f"--temp-dir={temp_dir}"]
    return cmd


def ray_node(args: list[str]) -> None:
    """`ray start` for one node of a loopback-only cluster.

    Ray's CLI refuses worker nodes when the loopback setting is on (it is meant for single-machine
    Windows/macOS); a several-raylet cluster on 127.0.0.1 is what ``ray.cluster_utils.Cluster`` runs
    in-process, so only the CLI's guard sees the setting as off. Address resolution keeps it on.
    """
    import types

    import ray._private.ray_constants as real
    import ray.scripts.scripts as scripts

    guard = types.ModuleType("ray_constants_for_cli")
    guard.__dict__.update(real.__dict__)
    guard.ENABLE_RAY_CLUSTER = True
    scripts.ray_constants = guard
    sys.argv = ["ray", *args]
    scripts.main()


def alive_nodes(gcs: str, env: dict[str, str]) -> int:
    """Alive nodes as the GCS sees them (a short-lived client, so the caller keeps no Ray connection)."""
    code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    out = subprocess.run([sys.executable, "-c", code, gcs], capture_output=True, text=True, env=env, timeout=60)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def http_ok(url: str) -> bool:
    """The server answers (any HTTP status: Ray's dashboard answers 401 without the token)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ PostgreSQL
def as_pg_user() -> list[str]:
    """initdb/postgres refuse to run as root: run them as the `postgres` system user then."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if not runuser:
        raise ClusterError("running as root without `runuser`: cannot start PostgreSQL as a non-root user")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError as e:
        raise ClusterError("running as root and no `postgres` user exists: run as a normal user") from e
    return [runuser, "-u", "postgres", "--"]


def write_private(path: Path, text: str) -> Path:
    """A file only its owner reads, created so (never readable for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)
    return path


def pgpass_file(root: Path, port: int, password: str) -> Path:
    """libpq's password file (host:port:db:user:password) for the mlflow role: read at connect time."""
    return write_private(root / "pg" / "pgpass", f"127.0.0.1:{port}:*:mlflow:{password}\n")


def backend_uri(root: Path, pg_port: int | None) -> str:
    """The store behind ``mlflow server``, without a password (libpq finds it in $PGPASSFILE)."""
    if pg_port is None:
        return f"sqlite:///{root / 'mlflow.db'}"
    return f"postgresql+psycopg2://mlflow@127.0.0.1:{pg_port}/mlflow"


def mlflow_server_cmd(root: Path, backend: str, port: int, auth: bool = False) -> list[str]:
    cmd = [mlflow_exe(), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend, "--artifacts-destination", str(root / "artifacts")]
    return cmd + (["--app-name", "basic-auth"] if auth else [])


AUTH_ENV = "mlflow-auth.env"


def basic_auth(root: Path) -> dict[str, str]:
    """MLflow's basic-auth app: its user database in ROOT, an admin with a random password (ROOT/mlflow-auth.env,
    0600: `source` it to sign in as MLFLOW_TRACKING_USERNAME/PASSWORD). The server's environment for it."""
    password = secrets.token_hex(12)
    ini = root / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'basic_auth.db'}\n"
                   "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    write_private(root / AUTH_ENV, f"export MLFLOW_TRACKING_USERNAME=admin\nexport MLFLOW_TRACKING_PASSWORD={password}\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}  # the app's CSRF protection signs with it


def secure_ray_token(home: Path | None = None) -> None:
    """Ray writes ~/.ray/auth_token readable by everyone (0644); whoever reads it may run code on the cluster."""
    token = (home or Path.home()) / ".ray" / "auth_token"
    if token.is_file():
        token.chmod(0o600)


def start_postgres(root: Path, port: int, password: str) -> int:
    pgdir, sock = root / "pg" / "data", root / "pg"
    sock.mkdir(parents=True)
    pwfile = root / "pg" / "pw"
    pwfile.write_text(password + "\n")
    wrap = as_pg_user()
    if wrap:
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    pwfile.chmod(0o600)
    subprocess.run(wrap + [pg_bin("initdb"), "-D", str(pgdir), "-U", "mlflow", f"--pwfile={pwfile}",
                           "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"],
                   check=True, capture_output=True)
    pwfile.unlink()
    opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c max_connections=40 "
            "-c fsync=off -c synchronous_commit=off")
    out = subprocess.run(wrap + [pg_bin("pg_ctl"), "-D", str(pgdir), "-o", opts, "-l", str(root / "pg" / "server.log"),
                                 "-w", "-t", "60", "start"], capture_output=True, text=True)
    if out.returncode:
        raise ClusterError(f"PostgreSQL did not start: {out.stdout}{out.stderr}")
    pid = int((pgdir / "postmaster.pid").read_text().split()[0])
    env = {**os.environ, "PGPASSFILE": str(pgpass_file(root, port, password))}
    createdb = pg_bin("createdb")
    subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"], check=True, env=env,
                   capture_output=True)
    return pid


# ------------------------------------------------------------------ up / down / status
def up(root: Path | None = None, *, workers: int = 2, worker_cpus: int = 1, postgres: bool = True,
       timeout: float = 120, auth: bool = False) -> dict:
    """Start the cluster and return its state (also written to ROOT/cluster.json)."""
    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="rsdc-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # the postgres user must reach its folder
    if (root / STATE).exists():
        raise ClusterError(f"{root / STATE} exists: a cluster may be running there (`down --dir {root}` first)")
    (root / "logs").mkdir(exist_ok=True)
    state: dict = {"dir": str(root), "pids": {}, "workers": []}
    env = base_env()
    try:
        gcs_port, dash_port, ml_port = free_port(), free_port(), free_port()
        state.update(gcs=f"127.0.0.1:{gcs_port}", dashboard=f"http://127.0.0.1:{dash_port}",
                     mlflow=f"http://127.0.0.1:{ml_port}", artifacts=str(root / "artifacts"),
                     storage=str(root / "storage"))
        # Jobs inherit the head's environment: `ray job submit -- search run ...` records in this server.
        env["MLFLOW_TRACKING_URI"] = state["mlflow"]
        (root / "storage").mkdir(exist_ok=True)
        if postgres:
            if not postgres_available():
                raise ClusterError("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: "
                                   "`apt-get install -y postgresql`, or pass --no-postgres for a sqlite store")
            pg_port, password = free_port(), secrets.token_hex(12)
            state["pids"]["postgres"] = start_postgres(root, pg_port, password)
            state["pg_port"] = pg_port
            state["pgpass"] = str(root / "pg" / "pgpass")
        backend = backend_uri(root, state.get("pg_port"))
        state["backend_store_uri"] = backend
        save(root, state)
        ml_log = root / "logs" / "mlflow.log"
        ml_env = {**env, **({"PGPASSFILE": state["pgpass"]} if postgres else {})}
        if auth:
            ml_env.update(basic_auth(root))
            state["auth_env"] = str(root / AUTH_ENV)
        ml = spawn(mlflow_server_cmd(root, backend, ml_port, auth), ml_log, ml_env)
        state["pids"]["mlflow"] = ml.pid
        save(root, state)
        # Ray starts while mlflow server migrates its database (the slowest part of `up`).
        # Short socket paths: Ray's unix sockets live under its temp dir (108-character limit).
        ray_tmp = root / "ray"
        head_log = root / "logs" / "ray-head.log"
        head = spawn(ray_node_cmd(head=True, gcs_port=gcs_port, cpus=0, temp_dir=ray_tmp, dashboard_port=dash_port),
                     head_log, env)
        state["pids"]["ray-head"] = head.pid
        save(root, state)
        wait_for(lambda: http_ok(f"{state['dashboard']}/api/version"), "Ray head (dashboard)", timeout, head, head_log)
        secure_ray_token()
        state["worker_cpus"] = worker_cpus
        for _ in range(workers):
            start_worker(root, state, env)
        wait_for(lambda: alive_nodes(state["gcs"], env) >= 1 + workers, f"{workers} Ray worker node(s)", timeout)
        wait_for(lambda: http_ok(f"{state['mlflow']}/health"), "mlflow server", timeout, ml, ml_log)
    except BaseException:
        down(root)
        raise
    write_env(root, state)
    return state


def start_worker(root: Path, state: dict, env: dict[str, str] | None = None) -> str:
    """One more worker raylet (also after a test killed one); returns its name. Does not wait for it."""
    i = len(state["workers"])
    name, log = f"ray-worker-{i}", root / "logs" / f"ray-worker-{i}.log"
    gcs_port = int(state["gcs"].rsplit(":", 1)[1])
    cmd = ray_node_cmd(head=False, gcs_port=gcs_port, cpus=state.get("worker_cpus", 1), temp_dir=root / f"ray-w{i}")
    p = spawn(cmd, log, env or base_env())
    state["pids"][name] = p.pid
    state["workers"].append({"name": name, "pid": p.pid, "log": str(log)})
    save(root, state)
    return name


def save(root: Path, state: dict) -> None:
    tmp = root / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(root / STATE)
    (root / STATE).chmod(0o600)  # ports and PIDs: no password


def write_env(root: Path, state: dict) -> None:
    lines = {"RAY_ADDRESS": state["dashboard"],  # `ray job submit` reads it (the jobs API)
             "RS_RAY_GCS": state["gcs"],  # `search run --address` / `ray start --address` use the GCS address
             "MLFLOW_TRACKING_URI": state["mlflow"], "RS_STORAGE": state["storage"], "RAY_AUTH_MODE": "token",
             LOOPBACK_ENV: "0"}  # drivers too: Ray would rewrite 127.0.0.1 to an address where nothing listens
    (root / ENV).write_text("".join(f"export {k}={v}\n" for k, v in lines.items()))


def load(root: Path) -> dict:
    path = Path(root) / STATE
    if not path.is_file():
        raise ClusterError(f"no cluster state at {path}")
    return json.loads(path.read_text())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1].splitlines()[0]
    except (OSError, IndexError):
        return True


def stop_groups(pids: list[int], grace: float = 10) -> None:
    """SIGTERM the process groups we started (spawn() made each PID a group leader), all at once; SIGKILL
    what is left after ``grace`` seconds (a Ray node drains for up to 30 s, nothing here needs it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        t0 = time.monotonic()
        while time.monotonic() - t0 < grace and any(pid_alive(p) for p in pids):
            time.sleep(0.3)


def down(root: Path) -> None:
    """Stop what ``up`` started: mlflow and the Ray nodes, then PostgreSQL (fast shutdown)."""
    root = Path(root)
    try:
        state = load(root)
    except ClusterError:
        return
    stop_groups([pid for name, pid in state["pids"].items() if name != "postgres"])
    if "postgres" in state["pids"] and pid_alive(state["pids"]["postgres"]):
        subprocess.run(as_pg_user() + [pg_bin("pg_ctl"), "-D", str(root / "pg" / "data"), "-m", "fast", "-w",
                                       "-t", "15", "stop"], capture_output=True)
    (root / STATE).rename(root / (STATE + ".down"))


def status(root: Path) -> dict[str, bool]:
    state = load(root)
    return {name: pid_alive(pid) for name, pid in state["pids"].items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the cluster")
    u.add_argument("--dir", type=Path, help="state folder (default: a new /tmp/rsdc-* folder)")
    u.add_argument("--workers", type=int, default=2)
    u.add_argument("--worker-cpus", type=int, default=1)
    u.add_argument("--no-postgres", action="store_true", help="a sqlite store behind mlflow server instead")
    u.add_argument("--auth", action="store_true", help="MLflow's basic-auth app (credentials in DIR/mlflow-auth.env)")
    for name in ("down", "status"):
        sub.add_parser(name).add_argument("--dir", type=Path, required=True)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ray-node"]:  # internal: how up() starts each Ray node
        ray_node(argv[1:])
        return 0
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            state = up(args.dir, workers=args.workers, worker_cpus=args.worker_cpus, postgres=not args.no_postgres,
                       auth=args.auth)
            print(f"cluster up in {state['dir']}\n  ray jobs API  {state['dashboard']}\n  ray GCS       {state['gcs']}\n"
                  f"  MLflow        {state['mlflow']}\n  source {state['dir']}/{ENV}\n"
                  f"  stop with: python {sys.argv[0]} down --dir {state['dir']}")
        elif args.cmd == "down":
            down(args.dir)
            print(f"cluster in {args.dir} stopped")
        else:
            for name, alive in status(args.dir).items():
                print(f"{name:14s} {'running' if alive else 'stopped'}")
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
