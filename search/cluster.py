"""Ray for a search: joining a cluster or starting a private one (loopback only, token kept private),
its authentication, and whether one trial fits the machine or the cluster."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spaces.study import Study, key_line

from . import machine, preflight
from .errors import SearchError


def quiet_libraries() -> None:
    """Tame Ray/Optuna/MLflow noise; warnings that matter (errors, failed trials) still show.

    Process-wide (environment, warning filters, loggers): the CLI calls it, a library call never does.
    A failed trial is reported once by the progress line and the final table (its traceback stays in
    the trial's error.txt and in MLflow), not by Tune's logger on every retry.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per trial
    # Trials run in actors, which get worker processes of their own: the task workers Ray prestarts
    # would only take CPU while the search starts (bench/vs_optuna.py).
    os.environ.setdefault("RAY_enable_worker_prestart", "0")
    # Tune's ResultGrid reads each trial's result.json, which the JSON logger passed in callbacks_for
    # writes (added in assemble_tuner); its automatic CSV and TensorBoard loggers would write each result twice more.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("ray", "ray.tune", "ray.air", "ray.train", "mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING if name != "alembic" else logging.ERROR)
    # Ray's local default (token auth on) announces itself on every start; the setting stays as it is.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # The grid sampler, once exhausted, stops its Optuna study from outside a callback: harmless.
    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):  # "Trial task failed", "did not complete"
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=True)
    check_ray_auth(address)
    joined = None if address else running_local_ray()
    try:
        if address:
            ray.init(address=address, **kwargs)
        elif joined and jobs_api_address():  # Ray would read $RAY_ADDRESS: name the head
            ray.init(address=joined, **kwargs)
        elif joined:  # as Ray joins it on its own (which also reads a local head's token)
            ray.init(**kwargs)
        else:  # a private Ray: no dashboard server at all, nothing listens beyond 127.0.0.1
            with loopback_only():
                ray.init(address="local", include_dashboard=False, _node_ip_address=LOOPBACK, **kwargs)
            keep_token_private()
    except Exception as e:  # noqa: BLE001 - Ray raises several types for an unreachable or refusing cluster
        raise SearchError(ray_init_error(address, e)) from None


LOOPBACK = "127.0.0.1"


LOOPBACK_SETTING = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: "0" keeps every node address on 127.0.0.1


def keep_token_private() -> None:
    """A private Ray turns token auth on and writes ~/.ray/auth_token as the umask allows (0644): whoever
    reads it may connect to every Ray cluster that trusts it. Only its owner reads it from here on."""
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    token = _get_default_token_path()
    if token.is_file() and token.stat().st_mode & 0o077:
        token.chmod(0o600)


@contextmanager
def loopback_only():
    """While a private Ray starts: its GCS, raylet and workers listen on 127.0.0.1 only (``ss -ltnp``).

    Ray otherwise takes the machine's network address and binds its gRPC servers to every interface. Its
    own switch for single-machine clusters (Windows, macOS) keeps them on loopback: the processes Ray starts
    read it from the environment they inherit, this driver from Ray's constants. Both are put back once Ray
    runs (the driver then asks its node for the address).
    """
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(LOOPBACK_SETTING), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_SETTING], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(LOOPBACK_SETTING, None)
        else:
            os.environ[LOOPBACK_SETTING] = saved_env


def jobs_api_address() -> bool:
    """$RAY_ADDRESS names the jobs API (http://HOST:8265, as docs/cluster.md exports it for `ray job submit`)."""
    return os.environ.get("RAY_ADDRESS", "").startswith(("http://", "https://"))


def running_local_ray(quiet: bool = False) -> str | None:
    """The Ray that ``ray.init()`` would join without ``--address``: $RAY_ADDRESS, else the head that
    ``ray start --head`` recorded on this machine (a search then connects in 0.1 s instead of starting
    Ray in 3 s: docs/performance.md). A recorded head that no longer answers is passed over (ray.init
    would wait on it for minutes); a $RAY_ADDRESS that does not answer is an error, as --address is.
    """
    from ray._private.services import find_bootstrap_address

    env = os.environ.get("RAY_ADDRESS", "")
    if jobs_api_address():
        if not quiet:
            print(f"note: RAY_ADDRESS={env} is the jobs API's address (for `ray job submit`), not a Ray cluster's: "
                  "ignored here (join a cluster with --address HOST:6379)", file=sys.stderr)
        env = ""
    if env and env not in ("auto", "local"):
        preflight.check_address(env, "$RAY_ADDRESS")
        return env
    if env == "local":
        return None
    recorded = find_bootstrap_address(None)
    if not recorded:
        return None
    try:
        preflight.check_address(recorded, "ray_current_cluster")
    except SearchError:
        if quiet:
            return None
        logging.getLogger(__name__).warning("the Ray head recorded by `ray start` at %s does not answer (a stale "
                                            "/tmp/ray/ray_current_cluster): starting a local Ray instead", recorded)
        return None
    if not quiet:
        print(f"using the Ray head already running at {recorded} (ray start --head); "
              "RAY_ADDRESS=local starts a private one", file=sys.stderr)
    return recorded


AUTH_HINT = ("the Ray cluster uses token authentication and refused this process's token: set RAY_AUTH_MODE=token "
             "and copy the head's ~/.ray/auth_token here (or set RAY_AUTH_TOKEN)")


def check_ray_auth(address: str | None) -> None:
    """A refused token costs ~30 s of Ray's C++ retry warnings, then a bare ConnectionError; a GCS client
    in a child process says so in about a second."""
    if not address or address in ("auto", "local") or address.startswith("ray://"):
        return
    code = ("import sys; from ray._raylet import GcsClient; "
            "GcsClient(address=sys.argv[1]).internal_kv_get(b'session_name', b'session', timeout=5)")
    try:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return  # ray.init reports what is wrong
    if out.returncode and "AuthenticationError" in out.stderr:
        raise SearchError(f"--address {address}: {AUTH_HINT}")
    check_loopback_rewrite(address)


def check_loopback_rewrite(address: str) -> None:
    """Ray connects to 127.0.0.1 through the machine's network address; a head bound to loopback only
    (scripts/dev_cluster.py) is not there, and ray.init would retry for minutes."""
    import socket

    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        return
    from ray._private.services import resolve_ip_for_localhost

    target = resolve_ip_for_localhost(host)
    try:
        with socket.create_connection((target, int(port)), timeout=2):
            return
    except OSError:
        raise SearchError(f"--address {address}: Ray would connect through {target}:{port}, where nothing listens "
                          "(the head listens on 127.0.0.1 only); set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, as "
                          "scripts/dev_cluster.py's env file does") from None


def ray_init_error(address: str | None, e: Exception) -> str:
    """One line for a cluster that refused us, naming the cause Ray chained below its ConnectionError."""
    chain, cause = [], e
    while cause is not None and len(chain) < 5:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = " <- ".join(chain)
    where = f"--address {address}" if address else "local Ray"
    if "authenticationerror" in text.lower() or "invalidauthtoken" in text.lower():
        return f"{where}: {AUTH_HINT}"
    return f"{where}: cannot connect to Ray ({text.splitlines()[0][:300]})"


def check_resources(study: Study, study_path: str | Path | None = None) -> None:
    """Fail before any trial starts when one trial cannot fit on the cluster (naming the key's line)."""
    check_fits(study.resources.cpus, study.resources.gpus, (lambda key: key_line(study_path, key)) if study_path else None)


def check_fits(cpus: float, gpus: float, line_of=None) -> None:
    import ray

    machine.check_fits(cpus, gpus, ray.cluster_resources(), "the cluster", line_of)


def check_fits_here(study: Study, study_path: str | Path, address: str | None) -> None:
    """Before Ray starts: a search that will start a private Ray checks its trials fit this machine."""
    if address or running_local_ray(quiet=True):
        return  # a cluster's resources are known once joined (check_resources)
    machine.check_fits(study.resources.cpus, study.resources.gpus, machine.local_resources(), "this machine",
                       lambda key: key_line(study_path, key))


def trials_that_fit(cpus: float, gpus: float) -> int:
    """How many trials the cluster holds at once: the default for ``max_concurrent``.

    Tune's own default with a searcher (Optuna) keeps one trial pending at a time, which on this
    machine ran the quickstart's trials one after another on two free cores (bench/vs_optuna.py).
    A cluster that autoscales grows past this only with an explicit ``--max-concurrent``.
    """
    import ray

    have = ray.cluster_resources()
    fits = [have.get("CPU", 0) / cpus] if cpus else []
    if gpus:
        fits.append(have.get("GPU", 0) / gpus)
    return max(1, int(min(fits) + 1e-9)) if fits else 1  # 1 / 0.1 is 9.999...: still 10 trials
