"""``search reproduce best.yaml``: the exported configuration at full budget on several seeds.

The study as it was searched: its resources per trial, its failure policy, its objective metric,
assembled by the same ``assemble_tuner`` as ``search run`` (a grid over seeds, no sampler, no early
stopping). Recorded in MLflow as a parent run (``rs.role=reproduce``, ``rs.source_search``) with
one child per seed; the parent holds ``<metric>_mean`` / ``<metric>_std`` for the objective and the
test metrics, which ``search report`` of the source search shows.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from records import schema, writer
from records.states import SearchState, TrialTracker
from spaces.study import load_exported
from trainables.core.config import TrainConfig

from . import preflight
from .callbacks import MlflowTrialLogger
from .cluster import check_fits, init_ray
from .errors import SearchError
from .progress import LiveProgress
from .runner import RUNS_DIR
from .tuner import assemble_tuner, storage_path


def summary_metrics(objective: str, reported: set[str]) -> list[str]:
    """The objective, then every test metric the trials reported."""
    return list(dict.fromkeys([objective, *sorted(m for m in reported if m.startswith("test_"))]))


def summarize(rows: list[dict[str, float]], metrics: list[str]):
    import pandas as pd

    df = pd.DataFrame(rows)
    cols = [c for c in metrics if c in df]
    return df, df[cols].agg(["mean", "std"]).T if cols else pd.DataFrame()


def reproduce(best: str | Path, *, seeds: list[int] | None = None, epochs: int | None = None,
              tracking_uri: str | None = None, address: str | None = None, runs_dir: str | Path = RUNS_DIR,
              quiet: bool = False, storage: str | None = None):
    from ray import tune

    if not Path(best).exists():
        raise SearchError(f"no such file: {best} (write one with `search export NAME --out {best}`)")
    exported = load_exported(best)
    metric, mode = exported.objective.metric, exported.objective.mode
    cpus, gpus, max_failures = exported.resources.cpus, exported.resources.gpus, exported.max_failures
    seeds = list(seeds or exported.reproduce.seeds)
    config = {**exported.config, "epochs": TrainConfig.from_dict(exported.config_at(epochs)).epochs}  # fails here, once
    preflight.check_runs_dir(runs_dir)
    what = "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI"
    uri = preflight.check_tracking_uri(schema.tracking_uri(tracking_uri), what, writable=True)
    if address is None:  # local: the driver's files are the trials' files
        preflight.check_study_datasets(config)
    preflight.check_address(address)
    client = preflight.open_store(uri, what)
    init_ray(address)
    check_fits(cpus, gpus)
    source = exported.search
    name = f"{source}-reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = writer.experiment_id(client, exported.study or "reproduce")
    parent = client.create_run(exp, run_name=name, tags={
        schema.ROLE: "reproduce", schema.SEARCH: name, schema.SOURCE_SEARCH: source, "rs.family": exported.family,
        "rs.study": exported.study, "rs.git_commit": writer.git_commit(), schema.STATE: SearchState.RUNNING.value}).info.run_id
    client.log_batch(parent, params=writer.as_params({
        "seeds": seeds, "epochs": config["epochs"], "objective": metric, "mode": mode, "resources.cpus": cpus,
        "resources.gpus": gpus, "max_failures": max_failures}))
    client.log_artifact(parent, str(best))
    tracker = TrialTracker(metric, mode, config["epochs"])
    callbacks = [MlflowTrialLogger(uri, parent, name, tracker)]
    if not quiet:
        callbacks.append(LiveProgress(TrialTracker(metric, mode, config["epochs"]), len(seeds)))
    tuner = assemble_tuner(family=exported.family, cpus=cpus, gpus=gpus, name=name, storage=storage_path(storage or runs_dir),
                           metric=metric, mode=mode, max_failures=max_failures, callbacks=callbacks,
                           param_space={**config, "seed": tune.grid_search(seeds)})
    results = tuner.fit()
    ok = [r for r in results if not r.error]
    reported = set().union(*(r.metrics.keys() for r in ok)) if ok else set()
    shown = summary_metrics(metric, reported)
    per_seed, summary = summarize([{"seed": r.config["seed"], **{k: r.metrics.get(k) for k in shown}} for r in ok],
                                  shown)
    for m, row in summary.iterrows():
        std = float(row["std"]) if not math.isnan(row["std"]) else 0.0
        client.log_batch(parent, metrics=writer.as_metrics({f"{m}_mean": float(row["mean"]), f"{m}_std": std}, 0))
    client.set_tag(parent, schema.STATE, SearchState.FINISHED.tag(f"{len(ok)} of {len(seeds)} seeds"))
    client.set_terminated(parent, "FINISHED")
    print(f"\nreproduced '{source}' at {config['epochs']} epochs on seeds {seeds} "
          f"({cpus:g} CPU, {gpus:g} GPU per trial):")
    print(per_seed.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for m, row in summary.iterrows():
        print(f"  {m}: {row['mean']:.4f} ± {row['std']:.4f}")
    return per_seed, summary
