"""Study -> ``ray.tune.Tuner``: the trainable with its resources, Optuna behind Tune (the sampler from
``spaces.samplers``), ASHA, the callbacks, and the one ``assemble_tuner`` that ``search reproduce`` shares."""

from __future__ import annotations

import importlib
from pathlib import Path

import records
from records import schema
from records.states import TrialTracker
from spaces.samplers import SAMPLERS, make_sampler
from spaces.study import Study, define_by_run
from trainables.families import FAMILIES
from trainables.objective import OBJECTIVE_KEY

from .cluster import trials_that_fit
from .driver import SearchMeta
from .errors import SearchError


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
