"""The life of a search: ``search run`` claims its name, opens the store while Ray starts, fits the Tuner
and finishes it; ``search resume`` takes over an interrupted one. Ray is in ``cluster``, the Tuner in
``tuner``, what follows the fit in ``finish``."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from records import schema, writer
from records.states import SearchState
from spaces.samplers import SAMPLERS
from spaces.study import Study, check_sampler, load_study
from trainables.families import FAMILIES

from . import credentials, driver, preflight
from .cluster import check_fits_here, check_resources, init_ray
from .driver import SearchMeta
from .errors import SearchError, TrialsFailed, error_summary
from .finish import SearchOutcome, finish
from .overrides import TAG as OVERRIDES_TAG
from .overrides import as_text as overrides_text
from .overrides import frozen_text
from .tuner import build_tuner, callbacks_for, storage_path, trainable_for

RUNS_DIR = "runs"
META_FILE, STUDY_FILE = driver.META_FILE, driver.STUDY_FILE


def open_store_while_ray_starts(uri: str, what: str, address: str | None, claim: str | None = None):
    """The MLflow store opens on a thread (imports and migrations: ~2 s) while Ray starts (~3 s, mostly
    waiting on its processes): 0.8 s less per search (bench/vs_optuna.py). Either's error is raised here.

    ``claim``: a search name that must be free in the store (checked on the thread, before Ray is used).
    """
    from concurrent.futures import ThreadPoolExecutor

    def open_and_check():
        client = preflight.open_store(uri, what)
        if claim:
            driver.check_name_free(client, claim, uri)
        return client

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-store") as pool:
        store = pool.submit(open_and_check)
        init_ray(address)
        return store.result()


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
    name = preflight.check_search_name(name or f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}", "--name")
    runs = preflight.check_runs_dir(runs_dir)
    if storage and "://" not in storage:
        preflight.check_runs_dir(storage, "--storage")
    what = "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI"
    uri = credentials.adopt_password(preflight.check_tracking_uri(schema.tracking_uri(tracking_uri), what, writable=True),
                                     what)
    preflight.probe_store(uri, what)
    preflight.check_address(address)
    check_fits_here(study, study_path, address)
    # On a local run the driver's files are the trials' files: a missing or damaged dataset fails here, once.
    data_source = preflight.check_study_datasets(study.base_config()) if address is None else None
    folder = driver.claim_folder(runs / name, name)  # the name is ours in this runs folder, before Ray starts
    try:
        frozen = folder / STUDY_FILE  # resume uses the study as it was, even if the file changes later
        frozen.write_text(frozen_text(study_path, overrides))
        client = open_store_while_ray_starts(uri, what, address, claim=name)
        check_resources(study, study_path)
        extra = {**driver.driver_tags(), **({OVERRIDES_TAG: overrides_text(overrides)} if overrides else {}),
                 schema.SHOWN: json.dumps(list(FAMILIES[study.family].shown_metrics(study.base_config())))}
        parent = writer.start_parent(client, study, name, frozen, sampler=sampler, data_source=data_source,
                                     extra_tags=extra)
        driver.claim_parent(client, name, parent, uri)  # of two drivers that got here at once, the first keeps it
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
        driver.write_to_storage(meta.storage, meta.name, asdict(meta), study_file)
    driver.write_to_parent(client, meta.parent_run_id, asdict(meta))


def find_recorded(name: str, runs: Path, storage: str | None, tracking_uri: str | None) -> tuple[dict, bytes]:
    """The search's recorded metadata (``SearchMeta`` fields) and frozen study, read without writing anything."""
    try:
        fields, study_bytes = driver.find_search(name, runs=runs, storage=storage, tracking_uri=tracking_uri)
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
    preflight.check_search_name(name)
    tracking_uri = credentials.adopt_password(tracking_uri) if tracking_uri else None
    preflight.check_address(address)
    # A driver that still beats owns the search: nothing is written, and Ray is not started, before this check.
    fields, _ = find_recorded(name, runs, storage, tracking_uri)
    uri = tracking_uri or credentials.adopt_password(fields["tracking_uri"], "tracking_uri")
    client = preflight.open_store(uri, "--tracking-uri" if tracking_uri else "tracking_uri")
    driver.refuse_if_live(driver.parent_of(client, name, fields["parent_run_id"], uri))
    meta = recover_meta(name, runs, storage, tracking_uri)
    meta.tracking_uri = credentials.adopt_password(meta.tracking_uri, "tracking_uri")  # a search.json of old
    study = load_study(meta.study_path)
    experiment = f"{meta.storage.rstrip('/')}/{name}"
    if not tune.Tuner.can_restore(experiment):
        raise SearchError(f"{experiment} holds no restorable Ray Tune state (the search never started its trials, "
                          "or --storage names another place)")
    init_ray(address)
    driver.take_over(client, meta.parent_run_id)
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
        client.set_tag(meta.parent_run_id, schema.STATE, SearchState.INTERRUPTED.value)
        client.set_terminated(meta.parent_run_id, "KILLED")
        driver.mark_children_interrupted(client, client.get_run(meta.parent_run_id))

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
        client.set_tag(meta.parent_run_id, schema.STATE, SearchState.FAILED.value)
        client.set_terminated(meta.parent_run_id, "FAILED")
        raise TrialsFailed(f"all {len(results)} trials of search '{meta.name}' failed; the first error: "
                           f"{error_summary(failed[0].error)} (each trial's traceback: error.txt in its folder "
                           f"under {meta.storage.rstrip('/')}/{meta.name} and in MLflow)")
    return finish(results, study, meta, runs / meta.name, client, seconds)


