"""Study -> ray.tune.Tuner -> results: the assembly behind ``search run`` and ``search resume``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import records
from records import schema
from records.states import RANKABLE, TrialTracker
from spaces.exported import exported_from, write_exported
from spaces.samplers import SAMPLERS, make_sampler
from spaces.study import Study, check_sampler, define_by_run, key_line, load_study
from trainables.families import FAMILIES
from trainables.objective import OBJECTIVE_KEY

from . import credentials, doors, durable, machine
from .errors import SearchError, TrialsFailed, error_summary
from .overrides import TAG as OVERRIDES_TAG
from .overrides import as_text as overrides_text
from .overrides import frozen_text
from .pareto import pareto_mask

RUNS_DIR = "runs"
META_FILE, STUDY_FILE = durable.META_FILE, durable.STUDY_FILE


@dataclass
class SearchMeta:
    """What a search needs to be resumed or exported, kept beside Ray's experiment state."""

    name: str
    study_path: str
    tracking_uri: str
    parent_run_id: str
    sampler: str
    num_samples: int
    max_concurrent: int | None
    storage: str  # Ray Tune's storage_path: a local folder, a shared mount or a cloud URI (s3://, gs://)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / META_FILE).write_text(json.dumps(durable.shareable(asdict(self)), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "SearchMeta":
        return cls(**json.loads((folder / META_FILE).read_text()))


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
        doors.check_address(env, "$RAY_ADDRESS")
        return env
    if env == "local":
        return None
    recorded = find_bootstrap_address(None)
    if not recorded:
        return None
    try:
        doors.check_address(recorded, "ray_current_cluster")
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


def open_store_while_ray_starts(uri: str, what: str, address: str | None, claim: str | None = None):
    """The MLflow store opens on a thread (imports and migrations: ~2 s) while Ray starts (~3 s, mostly
    waiting on its processes): 0.8 s less per search (bench/vs_optuna.py). Either's error is raised here.

    ``claim``: a search name that must be free in the store (checked on the thread, before Ray is used).
    """
    from concurrent.futures import ThreadPoolExecutor

    def open_and_check():
        client = doors.open_store(uri, what)
        if claim:
            durable.check_name_free(client, claim, uri)
        return client

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-store") as pool:
        store = pool.submit(open_and_check)
        init_ray(address)
        return store.result()


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


def trainable_for(family: str, cpus: float, gpus: float):
    """The family's trainable with its resources per trial (CPUs, fractional GPUs)."""
    from ray import tune

    return tune.with_resources(resolve_trainable(family), {"cpu": cpus, "gpu": gpus})


def resolve_trainable(family: str):
    module, _, fn = FAMILIES[family].trainable.partition(":")
    return getattr(importlib.import_module(module), fn)


def objective_metric(study: Study) -> str:
    return schema.searched_metric(study)


def storage_path(storage: str | Path) -> str:
    text = str(storage)
    return text if "://" in text else str(Path(text).resolve())


INIT_FROM_SEARCH = "search:"


def resolve_init_from(study: Study, meta: SearchMeta) -> Study:
    """``fixed: {init_from: search:NAME}``: the best model of the earlier search NAME, downloaded once
    beside this search's study copy (trials on other machines need that folder shared, like ``--storage``)."""
    ref = study.fixed.get("init_from")
    if not (isinstance(ref, str) and ref.startswith(INIT_FROM_SEARCH)):
        return study
    name = ref.removeprefix(INIT_FROM_SEARCH)
    dst = Path(meta.study_path).parent / "init_from" / name
    path = dst / Path(records.BEST_CHECKPOINT).name  # where MLflow puts the downloaded file
    if not path.is_file():
        try:
            info = records.search_info(name, meta.tracking_uri)
        except records.SearchNotFound as e:
            raise SearchError(f"fixed.init_from: {e}") from None
        path = records.download_checkpoint(info, dst)
        if path is None:
            raise SearchError(f"fixed.init_from: search '{name}' has no best model checkpoint to start from")
    return study.model_copy(update={"fixed": {**study.fixed, "init_from": str(Path(path).resolve())}})


def assemble_tuner(*, family: str, cpus: float, gpus: float, name: str, storage: str, metric: str, mode: str,
                   max_failures: int, callbacks: list, searcher=None, scheduler=None, param_space=None,
                   num_samples: int = 1, max_concurrent: int | None = None, time_budget_s: float | None = None,
                   keep_checkpoints: int = 2):
    """The one Tuner assembly behind ``search run`` and ``search reproduce``.

    Every trial keeps ``keep_checkpoints`` + 1 checkpoints at most: its latest (Ray keeps it for
    failure-restore and resume whatever ``num_to_keep`` says) and its best ones under ``metric``
    (the best epoch's weights are logged as ``best_model``; among equal scores Ray keeps the latest
    such epoch). Tune snapshots the whole experiment each time a trial has written ``num_to_keep``
    checkpoints since the last snapshot (so that its state never names a deleted checkpoint): with
    1, a snapshot per epoch, 15 % of a 64-trial quickstart's Tuner.fit (docs/performance.md).

    Tune's ResultGrid reads each trial's result.json, written by the JSON logger added here (its automatic
    loggers are off: ``quiet_libraries``); without it Tune warns "Failed to fetch metrics" for every trial.
    """
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    callbacks = [JsonLoggerCallback(), *callbacks]

    return tune.Tuner(
        trainable_for(family, cpus, gpus), param_space=param_space,
        tune_config=tune.TuneConfig(metric=metric, mode=mode, search_alg=searcher, scheduler=scheduler,
                                    num_samples=num_samples, max_concurrent_trials=max_concurrent,
                                    time_budget_s=time_budget_s, reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=0, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints, checkpoint_score_attribute=metric,
                                                    checkpoint_score_order=mode)),
    )


def make_searcher(study: Study, sampler: str):
    """Optuna behind Tune; with nsga2 it optimizes both objectives (each trial's last epoch)."""
    from ray.tune.search.optuna import OptunaSearch

    metric, mode = objective_metric(study), study.objective.mode
    extra = {OBJECTIVE_KEY: study.objective.model_dump()} if study.objective.constraint else None
    if SAMPLERS[sampler].objectives == 2:
        pw = study.objective.pareto_with
        metric, mode = [metric, pw.metric], [mode, pw.mode]
    return OptunaSearch(space=define_by_run(study, extra), metric=metric, mode=mode,
                        sampler=make_sampler(sampler, study))


def build_tuner(study: Study, meta: SearchMeta, callbacks: list):
    from ray.tune.schedulers import ASHAScheduler

    study = resolve_init_from(study, meta)
    metric, mode = objective_metric(study), study.objective.mode
    searcher = make_searcher(study, meta.sampler)
    scheduler = None
    if study.budget.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=study.budget.max_epochs,
                                  grace_period=study.budget.grace_period,
                                  reduction_factor=study.budget.reduction_factor)
        from .callbacks import AshaState

        callbacks = [*callbacks, AshaState(scheduler)]  # Tune does not save ASHA's rungs; this callback does
    return assemble_tuner(family=study.family, cpus=study.resources.cpus, gpus=study.resources.gpus, name=meta.name,
                          storage=meta.storage, metric=metric, mode=mode, max_failures=study.budget.max_failures,
                          callbacks=callbacks, searcher=searcher, scheduler=scheduler, num_samples=meta.num_samples,
                          max_concurrent=meta.max_concurrent or trials_that_fit(study.resources.cpus, study.resources.gpus),
                          time_budget_s=study.budget.time_budget_s, keep_checkpoints=study.budget.keep_checkpoints)


def trial_dirname(trial) -> str:
    return trial_dirname_of(trial.trial_id)  # Ray's default packs every parameter into the folder name


def trial_dirname_of(trial_id: str) -> str:
    return f"trial_{trial_id}"


def tracker_for(study: Study) -> TrialTracker:
    """Per-trial states and best epochs, with the metrics worth keeping at the best epoch."""
    o = study.objective
    companions = (o.metric, o.constraint.metric if o.constraint else None, o.pareto_with.metric if o.pareto_with else None)
    return TrialTracker(objective_metric(study), o.mode, study.budget.max_epochs, companions)


def callbacks_for(study: Study, meta: SearchMeta, quiet: bool = False) -> list:
    from .callbacks import MlflowTrialLogger  # imports Ray: only when a search runs
    from .eta import EpochPlan
    from .progress import LiveProgress

    records_cb = MlflowTrialLogger(meta.tracking_uri, meta.parent_run_id, meta.name, tracker_for(study))
    cbs = [records_cb]
    if not quiet:
        cbs.append(LiveProgress(tracker_for(study), meta.num_samples, plan=EpochPlan.of_budget(study.budget),
                                time_budget_s=study.budget.time_budget_s, store_status=records_cb.outage))
    return cbs


@dataclass
class SearchOutcome:
    name: str
    table: Any  # pandas DataFrame read back from MLflow (records.trials): one row per trial, best first
    best_config: dict[str, Any]
    best_value: float | None
    best_yaml: Path | None  # None when no trial holds a score
    parent_run_id: str
    seconds: float
    tracking_uri: str


def start_search(study_path: str | Path, *, num_samples: int | None = None, max_concurrent: int | None = None,
                 sampler: str | None = None, tracking_uri: str | None = None, address: str | None = None,
                 name: str | None = None, runs_dir: str | Path = RUNS_DIR, storage: str | None = None,
                 quiet: bool = False, overrides: dict[str, Any] | None = None) -> SearchOutcome:
    # Preflight: every input is checked before Ray starts and before anything is written.
    overrides = overrides or {}
    study = load_study(study_path, overrides=dict(overrides))
    sampler = sampler or study.sampler
    problems = check_sampler(study, sampler)
    for option, value in (("--num-samples", num_samples), ("--max-concurrent", max_concurrent)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(f"{option}: must be a whole number >= 1 (got {value!r})")
    if problems:
        raise SearchError("\n".join(problems))
    if num_samples is None:
        num_samples = study.grid_size() if SAMPLERS[sampler].finite_space else study.budget.num_samples
    name = doors.check_search_name(name or f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}", "--name")
    runs = doors.check_runs_dir(runs_dir)
    if storage and "://" not in storage:
        doors.check_runs_dir(storage, "--storage")
    what = "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI"
    uri = credentials.adopt_password(doors.check_tracking_uri(schema.tracking_uri(tracking_uri), what, writable=True),
                                     what)
    doors.probe_store(uri, what)
    doors.check_address(address)
    check_fits_here(study, study_path, address)
    # On a local run the driver's files are the trials' files: a missing or damaged dataset fails here, once.
    data_source = doors.check_dataset(study.base_config()) if address is None else None
    folder = durable.claim_folder(runs / name, name)  # the name is ours in this runs folder, before Ray starts
    try:
        frozen = folder / STUDY_FILE  # resume uses the study as it was, even if the file changes later
        frozen.write_text(frozen_text(study_path, overrides))
        client = open_store_while_ray_starts(uri, what, address, claim=name)
        check_resources(study, study_path)
        extra = {**durable.driver_tags(), **({OVERRIDES_TAG: overrides_text(overrides)} if overrides else {}),
                 schema.SHOWN: json.dumps(list(FAMILIES[study.family].shown_metrics(study.base_config())))}
        parent = schema.start_parent(client, study, name, frozen, sampler=sampler, data_source=data_source,
                                     extra_tags=extra)
        durable.claim_parent(client, name, parent, uri)  # of two drivers that got here at once, the first keeps it
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-written: the name is free again
        raise
    meta = SearchMeta(name, str(frozen.resolve()), uri, parent, sampler, num_samples,
                      max_concurrent or study.budget.max_concurrent, storage_path(storage or runs))
    meta.save(folder)
    save_durably(meta, frozen, client)
    tuner = build_tuner(study, meta, callbacks_for(study, meta, quiet))
    return _fit(tuner, study, meta, runs, client)


def save_durably(meta: SearchMeta, study_file: Path, client) -> None:
    """Beside Ray Tune's state in --storage and on the parent run: resume works from any directory."""
    if Path(meta.storage, meta.name).resolve() != study_file.parent.resolve():  # storage is not runs/ itself
        durable.write_to_storage(meta.storage, meta.name, asdict(meta), study_file)
    durable.write_to_parent(client, meta.parent_run_id, asdict(meta))


def find_recorded(name: str, runs: Path, storage: str | None, tracking_uri: str | None) -> tuple[dict, bytes]:
    """The search's recorded metadata (``SearchMeta`` fields) and frozen study, read without writing anything."""
    try:
        fields, study_bytes = durable.find_search(name, runs=runs, storage=storage, tracking_uri=tracking_uri)
        SearchMeta(**fields)
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise SearchError(f"{runs / name / META_FILE}: unreadable ({type(e).__name__}: {e}); "
                          "the search cannot be resumed") from None
    return fields, study_bytes


def recover_meta(name: str, runs: Path, storage: str | None, tracking_uri: str | None) -> SearchMeta:
    """The search's metadata from runs/NAME, --storage or MLflow, with its study copied back to runs/NAME."""
    folder = runs / name
    fields, study_bytes = find_recorded(name, runs, storage, tracking_uri)
    folder.mkdir(parents=True, exist_ok=True)
    frozen = folder / STUDY_FILE
    if not frozen.is_file():
        frozen.write_bytes(study_bytes)
    meta = SearchMeta(**{**fields, "study_path": str(frozen.resolve())})
    if storage:
        meta.storage = storage_path(storage)
    if tracking_uri:  # the same server seen from here (a tunnel, another host name)
        meta.tracking_uri = tracking_uri
    meta.save(folder)
    return meta


def resume_search(name: str, *, runs_dir: str | Path = RUNS_DIR, address: str | None = None,
                  quiet: bool = False, storage: str | None = None, tracking_uri: str | None = None) -> SearchOutcome:
    from ray import tune

    runs = Path(runs_dir)
    doors.check_search_name(name)
    tracking_uri = credentials.adopt_password(tracking_uri) if tracking_uri else None
    doors.check_address(address)
    # A driver that still beats owns the search: nothing is written, and Ray is not started, before this check.
    fields, _ = find_recorded(name, runs, storage, tracking_uri)
    uri = tracking_uri or credentials.adopt_password(fields["tracking_uri"], "tracking_uri")
    client = doors.open_store(uri, "--tracking-uri" if tracking_uri else "tracking_uri")
    durable.refuse_if_live(durable.parent_of(client, name, fields["parent_run_id"], uri))
    meta = recover_meta(name, runs, storage, tracking_uri)
    meta.tracking_uri = credentials.adopt_password(meta.tracking_uri, "tracking_uri")  # a search.json of old
    study = load_study(meta.study_path)
    experiment = f"{meta.storage.rstrip('/')}/{name}"
    if not tune.Tuner.can_restore(experiment):
        raise SearchError(f"{experiment} holds no restorable Ray Tune state (the search never started its trials, "
                          "or --storage names another place)")
    init_ray(address)
    durable.take_over(client, meta.parent_run_id)
    # The callbacks come back from Tune's saved state; the MLflow one re-finds its child runs.
    tuner = tune.Tuner.restore(experiment, resume_errored=True, trainable=trainable_for(
        study.family, study.resources.cpus, study.resources.gpus))
    retarget_callbacks(tuner, meta)
    return _fit(tuner, study, meta, runs, client)


def flush_records(tuner) -> None:
    """Tune flushes the MLflow writer when it stops; a second Ctrl-C can cut that short."""
    from .callbacks import MlflowTrialLogger

    for cb in tuner._local_tuner.get_run_config().callbacks or []:
        if isinstance(cb, MlflowTrialLogger):
            try:
                cb.flush()
            except Exception:  # noqa: BLE001 - the interruption is what gets reported
                logging.getLogger(__name__).warning("some trial records were not written", exc_info=True)


def retarget_callbacks(tuner, meta: SearchMeta) -> None:
    """Restored callbacks keep the tracking URI of the first driver; this driver may see the server elsewhere."""
    from .callbacks import MlflowTrialLogger

    for cb in tuner._local_tuner.get_run_config().callbacks or []:
        if isinstance(cb, MlflowTrialLogger):
            cb.uri, cb._client = meta.tracking_uri, None


def _fit(tuner, study: Study, meta: SearchMeta, runs: Path, client) -> SearchOutcome:
    def interrupted():
        client.set_tag(meta.parent_run_id, schema.STATE, "interrupted")
        client.set_terminated(meta.parent_run_id, "KILLED")
        durable.mark_children_interrupted(client, client.get_run(meta.parent_run_id))

    t0 = time.monotonic()
    try:
        results = tuner.fit()
    except BaseException:
        flush_records(tuner)
        interrupted()
        raise
    seconds = time.monotonic() - t0
    unfinished = results.num_terminated + results.num_errors < len(results)
    too_few = len(results) < meta.num_samples and not study.budget.time_budget_s
    if unfinished or too_few:  # Ctrl-C: Tune stopped gracefully and returned what it had
        interrupted()
        raise KeyboardInterrupt(meta.name)
    failed = [r for r in results if r.error]
    if len(results) and len(failed) == len(results):  # nothing to rank: say why once, exit non-zero
        client.set_tag(meta.parent_run_id, schema.STATE, "failed")
        client.set_terminated(meta.parent_run_id, "FAILED")
        raise TrialsFailed(f"all {len(results)} trials of search '{meta.name}' failed; the first error: "
                           f"{error_summary(failed[0].error)} (each trial's traceback: error.txt in its folder "
                           f"under {meta.storage.rstrip('/')}/{meta.name} and in MLflow)")
    # Everything below reads the records back: the table, the best trial and best.yaml are the
    # ones `search show` and `search export` would give for this search.
    table = records.trials(meta.name, meta.tracking_uri, client=client)
    best = records.best_row(table)
    folder = runs / meta.name
    best_config, best_value, best_yaml = {}, None, None
    if best is not None:
        best_value = float(best[table.attrs["best_column"]])
        client.log_metric(meta.parent_run_id, table.attrs["best_column"], best_value)
        log_best_model(results, best, client, meta.parent_run_id)
        exported = exported_from(records.best_trial_record(meta.name, meta.tracking_uri, client=client, table=table))
        best_yaml, best_config = write_exported(exported, folder / schema.BEST_YAML), exported.config
        client.log_artifact(meta.parent_run_id, str(best_yaml))
    table.drop(columns=["run_id"]).to_csv(folder / "trials.csv", index=False)
    client.log_artifact(meta.parent_run_id, str(folder / "trials.csv"))
    if study.objective.pareto_with:
        front = mark_pareto(study, table, client, meta.parent_run_id)
        table.insert(table.columns.get_loc("outcome") + 1, "pareto", table["trial"].isin(front))  # as show reads it
    client.log_metric(meta.parent_run_id, "search_seconds", seconds)
    client.set_tag(meta.parent_run_id, schema.STATE, "finished")
    client.set_terminated(meta.parent_run_id, "FINISHED")
    return SearchOutcome(meta.name, table, best_config, best_value, best_yaml, meta.parent_run_id, seconds,
                         meta.tracking_uri)


def log_best_model(results, best, client, parent_run_id: str) -> None:
    """Log the best trial's checkpoint *at its best epoch* (the one the table reports) as ``best_model``."""
    trial_id, epoch = str(best["trial"]), best["best_epoch"]
    if pd.isna(epoch):
        return
    for r in results:
        if r.metrics.get("trial_id") != trial_id and not (r.path and Path(r.path).name == trial_dirname_of(trial_id)):
            continue
        for checkpoint, metrics in r.best_checkpoints or []:
            if int(metrics.get("epoch", metrics.get("training_iteration", -1))) == epoch:
                with checkpoint.as_directory() as d:
                    schema.log_best_model(client, parent_run_id, best["run_id"], d, trial_id, int(epoch))
                return
    logging.getLogger(__name__).warning("no checkpoint of trial %s at epoch %s: best_model not logged", trial_id, epoch)


def mark_pareto(study: Study, table, client, parent_run_id: str) -> list[str]:
    """The Pareto front over the objective and ``pareto_with``, both at each trial's best epoch (its trial ids)."""
    o, pw = study.objective, study.objective.pareto_with
    first = table.attrs["best_column"] if objective_metric(study) == o.metric else schema.at_best_key(o.metric)
    second = schema.best_key(pw.metric) if pw.metric == objective_metric(study) else schema.at_best_key(pw.metric)
    scored = table[table["outcome"].isin(RANKABLE)]
    if scored.empty or first not in scored or second not in scored:
        return []
    front = list(scored.loc[pareto_mask(scored, [(first, o.mode), (second, pw.mode)]), "trial"])
    schema.mark_pareto(client, parent_run_id, dict(zip(table["trial"], table["run_id"])), front)
    return front
