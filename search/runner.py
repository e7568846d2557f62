"""Study -> ray.tune.Tuner -> results: the assembly behind ``search run`` and ``search resume``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from spaces.study import Study, check_sampler, define_by_run, load_study
from trainables.families import FAMILIES
from trainables.objective import OBJECTIVE_KEY

from . import doors, tracking
from .callbacks import MlflowTrialLogger
from .errors import SearchError, TrialsFailed, error_summary
from .pareto import pareto_mask

SAMPLERS = ("tpe", "random", "grid", "cmaes")
RUNS_DIR = "runs"
META_FILE = "search.json"
STUDY_FILE = "study.yaml"


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
        (folder / META_FILE).write_text(json.dumps(asdict(self), indent=2))

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
    if address:
        ray.init(address=address, **kwargs)
    else:  # local: no dashboard server at all, nothing listens beyond 127.0.0.1
        ray.init(include_dashboard=False, **kwargs)


def check_resources(study: Study) -> None:
    """Fail before any trial starts when one trial cannot fit on the cluster."""
    import ray

    have = ray.cluster_resources()
    need = study.resources
    if need.gpus > have.get("GPU", 0):
        raise SearchError(f"resources.gpus: a trial asks for {need.gpus} GPU but the cluster has "
                          f"{have.get('GPU', 0):g}. Set resources.gpus: 0 to run on CPUs, or use --address "
                          "to submit to a cluster with GPUs.")
    if need.cpus > have.get("CPU", 0):
        raise SearchError(f"resources.cpus: a trial asks for {need.cpus:g} CPUs but the cluster has "
                          f"{have.get('CPU', 0):g}.")


def trainable_for(study: Study):
    """The family's trainable with the study's resources per trial (CPUs, fractional GPUs)."""
    from ray import tune

    return tune.with_resources(resolve_trainable(study.family),
                               {"cpu": study.resources.cpus, "gpu": study.resources.gpus})


def resolve_trainable(family: str):
    module, _, fn = FAMILIES[family].trainable.partition(":")
    return getattr(importlib.import_module(module), fn)


def make_sampler(name: str, study: Study):
    import optuna

    seed = study.seed
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "grid":
        return optuna.samplers.GridSampler({n: p.grid_values() for n, p in study.search.items()}, seed=seed)
    raise SearchError(f"unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}")


def objective_metric(study: Study) -> str:
    return "objective" if study.objective.constraint else study.objective.metric


def storage_path(storage: str | Path) -> str:
    text = str(storage)
    return text if "://" in text else str(Path(text).resolve())


def build_tuner(study: Study, meta: SearchMeta, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    metric, mode = objective_metric(study), study.objective.mode
    extra = {OBJECTIVE_KEY: study.objective.model_dump()} if study.objective.constraint else None
    searcher = OptunaSearch(space=define_by_run(study, extra), metric=metric, mode=mode,
                            sampler=make_sampler(meta.sampler, study))
    scheduler = None
    if study.budget.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=study.budget.max_epochs,
                                  grace_period=study.budget.grace_period,
                                  reduction_factor=study.budget.reduction_factor)
    return tune.Tuner(
        trainable_for(study),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, search_alg=searcher, scheduler=scheduler,
                                    num_samples=meta.num_samples, max_concurrent_trials=meta.max_concurrent,
                                    time_budget_s=study.budget.time_budget_s, reuse_actors=True,
                                    trial_dirname_creator=trial_dirname),
        run_config=run_config(study, meta, callbacks),
    )


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # Ray's default packs every parameter into the folder name


def run_config(study: Study, meta: SearchMeta, callbacks: list):
    from ray import tune

    return tune.RunConfig(
        name=meta.name, storage_path=meta.storage, verbose=0, callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=study.budget.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
    )


def callbacks_for(study: Study, meta: SearchMeta, quiet: bool = False) -> list:
    from .progress import LiveProgress

    cbs = [MlflowTrialLogger(meta.tracking_uri, meta.parent_run_id, meta.name, study.budget.max_epochs,
                                      objective_metric(study), study.objective.mode)]
    if not quiet:
        cbs.append(LiveProgress(objective_metric(study), study.objective.mode, meta.num_samples,
                                study.budget.max_epochs))
    return cbs


@dataclass
class SearchOutcome:
    name: str
    table: Any  # pandas DataFrame: one row per trial, best first
    best_config: dict[str, Any]
    best_value: float | None
    best_yaml: Path
    parent_run_id: str
    seconds: float
    tracking_uri: str


def start_search(study_path: str | Path, *, num_samples: int | None = None, max_concurrent: int | None = None,
                 sampler: str | None = None, tracking_uri: str | None = None, address: str | None = None,
                 name: str | None = None, runs_dir: str | Path = RUNS_DIR, storage: str | None = None,
                 quiet: bool = False) -> SearchOutcome:
    # Preflight: every input is checked before Ray starts and before anything is written.
    study = load_study(study_path)
    sampler = sampler or study.sampler
    problems = check_sampler(study, sampler)
    if sampler not in SAMPLERS:
        problems.append(f"--sampler: unknown sampler '{sampler}'; choose one of: {', '.join(SAMPLERS)}")
    for option, value in (("--num-samples", num_samples), ("--max-concurrent", max_concurrent)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(f"{option}: must be a whole number >= 1 (got {value!r})")
    if problems:
        raise SearchError("\n".join(problems))
    if num_samples is None:
        num_samples = study.grid_size() if sampler == "grid" else study.budget.num_samples
    name = doors.check_search_name(name or f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}", "--name")
    runs = doors.check_runs_dir(runs_dir)
    if (runs / name).exists():
        raise SearchError(f"a search named '{name}' already exists in {runs}/: choose another --name, "
                          f"or continue it with `search resume {name}`")
    if storage and "://" not in storage:
        doors.check_runs_dir(storage, "--storage")
    uri = doors.check_tracking_uri(tracking.tracking_uri(tracking_uri),
                                   "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI", writable=True)
    doors.check_address(address)
    # On a local run the driver's files are the trials' files: a missing or damaged dataset fails here, once.
    data_source = doors.check_dataset(study.base_config()) if address is None else None
    client = doors.open_store(uri, "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI")
    init_ray(address)
    check_resources(study)
    parent = tracking.start_parent(client, study, name, Path(study_path), sampler=sampler, data_source=data_source)
    (runs / name).mkdir(parents=True)
    frozen = runs / name / STUDY_FILE  # resume uses the study as it was, even if the file changes later
    shutil.copyfile(study_path, frozen)
    meta = SearchMeta(name, str(frozen.resolve()), uri, parent, sampler, num_samples,
                      max_concurrent or study.budget.max_concurrent, storage_path(storage or runs))
    meta.save(runs / name)
    tuner = build_tuner(study, meta, callbacks_for(study, meta, quiet))
    return _fit(tuner, study, meta, runs, client)


def resume_search(name: str, *, runs_dir: str | Path = RUNS_DIR, address: str | None = None,
                  quiet: bool = False) -> SearchOutcome:
    from ray import tune

    runs = Path(runs_dir)
    folder = runs / name
    doors.check_search_name(name)
    if not (folder / META_FILE).is_file():
        raise SearchError(f"no search named '{name}' in {runs}/ (`search ls` lists the searches)")
    try:
        meta = SearchMeta.load(folder)
    except (ValueError, TypeError, OSError) as e:
        raise SearchError(f"{folder / META_FILE}: unreadable ({type(e).__name__}: {e}); "
                          "the search cannot be resumed") from None
    study = load_study(meta.study_path)
    experiment = f"{meta.storage.rstrip('/')}/{name}"
    if not tune.Tuner.can_restore(experiment):
        raise SearchError(f"{experiment} holds no restorable Ray Tune state (the search never started its trials)")
    doors.check_address(address)
    client = doors.open_store(meta.tracking_uri, f"{folder / META_FILE}: tracking_uri")
    init_ray(address)
    client.set_tag(meta.parent_run_id, tracking.STATE, "running")
    # The callbacks come back from Tune's saved state; the MLflow one re-finds its child runs.
    tuner = tune.Tuner.restore(experiment, trainable=trainable_for(study), resume_errored=True)
    return _fit(tuner, study, meta, runs, client)


def _fit(tuner, study: Study, meta: SearchMeta, runs: Path, client) -> SearchOutcome:
    def interrupted():
        client.set_tag(meta.parent_run_id, tracking.STATE, "interrupted")
        client.set_terminated(meta.parent_run_id, "KILLED")

    t0 = time.monotonic()
    try:
        results = tuner.fit()
    except BaseException:
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
        client.set_tag(meta.parent_run_id, tracking.STATE, "failed")
        client.set_terminated(meta.parent_run_id, "FAILED")
        raise TrialsFailed(f"all {len(results)} trials of search '{meta.name}' failed; the first error: "
                           f"{error_summary(failed[0].error)} (each trial's traceback: error.txt in its folder "
                           f"under {meta.storage.rstrip('/')}/{meta.name} and in MLflow)")
    metric, mode = objective_metric(study), study.objective.mode
    table = results_table(results, study)
    best_config, best_value = {}, None
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="all")
        if best.config is None:
            raise ValueError("no trial reported")
        best_config = {k: v for k, v in best.config.items() if k != OBJECTIVE_KEY}
        best_value = float(table[metric].iloc[0])  # the table is sorted best first by each trial's best epoch
        tracking.log_best(client, meta.parent_run_id, best, metric, best_value)
    except (RuntimeError, KeyError, ValueError):
        pass  # every trial failed: the table says so
    folder = runs / meta.name
    best_yaml = folder / "best.yaml"
    write_best_yaml(best_yaml, study, meta, best_config, metric, best_value)
    client.log_artifact(meta.parent_run_id, str(best_yaml))
    table.to_csv(folder / "trials.csv", index=False)
    client.log_artifact(meta.parent_run_id, str(folder / "trials.csv"))
    if "pareto" in table:
        tracking.mark_pareto(client, meta.parent_run_id, list(table.loc[table["pareto"], "trial"]))
    client.log_metric(meta.parent_run_id, "search_seconds", seconds)
    client.set_tag(meta.parent_run_id, tracking.STATE, "finished")
    client.set_terminated(meta.parent_run_id, "FINISHED")
    return SearchOutcome(meta.name, table, best_config, best_value, best_yaml, meta.parent_run_id, seconds,
                         meta.tracking_uri)


def results_table(results, study: Study):
    """One row per trial: its searched parameters, best objective value, epochs run and state."""
    import pandas as pd

    metric, mode = objective_metric(study), study.objective.mode
    constraint = study.objective.constraint.metric if study.objective.constraint else None
    pareto = study.objective.pareto_with.metric if study.objective.pareto_with else None
    rows = []
    for r in results:
        trial_id = Path(r.path).name if r.path else "?"
        df = r.metrics_dataframe
        row: dict[str, Any] = {"trial": r.metrics.get("trial_id", trial_id)}
        row.update({k: (r.config or {}).get(k) for k in study.search})
        shown = [metric] + [m for m in dict.fromkeys((study.objective.metric, constraint, pareto)) if m and m != metric]
        if df is not None and metric in df and df[metric].notna().any():
            best = df.loc[df[metric].idxmax() if mode == "max" else df[metric].idxmin()]
            row.update({m: best.get(m, float("nan")) for m in shown})
            row["epochs"] = int(df["training_iteration"].max())
        else:
            row.update({m: float("nan") for m in shown})
            row["epochs"] = 0
        row["state"] = ("failed" if r.error else "completed" if row["epochs"] >= study.budget.max_epochs
                        else "stopped early")
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(metric, ascending=(mode == "min"), na_position="last").reset_index(drop=True)
    if pareto and len(table):
        pw = study.objective.pareto_with
        table["pareto"] = pareto_mask(table, [(study.objective.metric, study.objective.mode), (pw.metric, pw.mode)])
    return table


def write_best_yaml(path: Path, study: Study, meta: SearchMeta, config: dict[str, Any], metric: str,
                    value: float | None) -> None:
    doc = {
        "study": study.name, "family": study.family, "dataset": study.dataset, "search": meta.name,
        "objective": {"metric": metric, "mode": study.objective.mode, "value": value},
        "config": config,
        "reproduce": study.reproduce.model_dump(exclude_none=True),
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
