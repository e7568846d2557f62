"""``search reproduce best.yaml``: the exported configuration at full budget on several seeds.

One Tune run with a grid over seeds (no sampler, no early stopping), recorded in MLflow as
a parent run with one child per seed; prints mean ± std of the validation and test metrics.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from . import doors, tracking
from .callbacks import MlflowTrialLogger
from .errors import SearchError
from .progress import LiveProgress
from .runner import RUNS_DIR, init_ray, resolve_trainable

SUMMARY_METRICS = ("val_acc", "val_loss", "test_acc", "test_loss")


def load_exported(path: str | Path) -> dict[str, Any]:
    """Read a ``best.yaml`` written by ``search export``; every problem is a ``StudyError`` line with its line number."""
    from pydantic import ValidationError

    from spaces.study import Reproduce, StudyError, read_yaml_file, yaml_problems
    from trainables.core.config import ConfigError, TrainConfig
    from trainables.families import FAMILIES

    what = "exported configuration"
    if not Path(path).exists():
        raise SearchError(f"no such file: {path} (write one with `search export NAME --out {path}`)")
    text, doc = read_yaml_file(path, what)
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else f"a {type(doc).__name__}"
        raise StudyError(str(path), [f"(file): a mapping with family, config, ... as `search export` writes it "
                                     f"(got {got})"], what)
    problems = yaml_problems(text)
    for key in ("family", "config"):
        if key not in doc:
            problems.add((), f"required key '{key}' is missing (write the file with `search export NAME`)")
    if "family" in doc and doc["family"] not in FAMILIES:
        problems.add(("family",), f"unknown family {doc['family']!r}; choose one of: {', '.join(FAMILIES)}")
    config = doc.get("config")
    if "config" in doc and not isinstance(config, dict):
        problems.add(("config",), f"a mapping of training parameters (got {type(config).__name__})")
    elif isinstance(config, dict):
        try:
            TrainConfig.from_dict(config)
        except ConfigError as e:
            for line in e.problems:  # "key: why", or "unknown key 'name'; ..."
                unknown = re.match(r"unknown (?:key|parameter) '([^']+)'", line)
                key, sep, msg = line.partition(": ")
                if unknown:
                    problems.add(("config", unknown.group(1)), line)
                elif sep and re.fullmatch(r"[\w.]+", key):
                    problems.add(("config", *key.split(".")), msg)
                else:
                    problems.add(("config",), line)
    try:
        Reproduce.model_validate(doc.get("reproduce") or {})
    except ValidationError as e:
        for err in e.errors():
            problems.add(("reproduce", *err["loc"]), err["msg"].removeprefix("Value error, "))
    if problems.items:
        raise StudyError(str(path), problems.items, what)
    return doc


def summarize(rows: list[dict[str, float]]):
    import pandas as pd

    df = pd.DataFrame(rows)
    cols = [c for c in SUMMARY_METRICS if c in df]
    return df, df[cols].agg(["mean", "std"]).T if cols else pd.DataFrame()


def reproduce(best: str | Path, *, seeds: list[int] | None = None, epochs: int | None = None,
              tracking_uri: str | None = None, address: str | None = None, runs_dir: str | Path = RUNS_DIR,
              cpus: float = 1.0, gpus: float = 0.0):
    from ray import tune

    from trainables.core import TrainConfig

    doc = load_exported(best)
    repro = doc.get("reproduce") or {}
    seeds = seeds or repro.get("seeds") or [0, 1, 2]
    config = dict(doc["config"])
    config["epochs"] = epochs or repro.get("epochs") or config.get("epochs", 10)
    TrainConfig.from_dict(config)  # fail here, not in every trial
    doors.check_runs_dir(runs_dir)
    what = "--tracking-uri" if tracking_uri else "MLFLOW_TRACKING_URI"
    uri = doors.check_tracking_uri(tracking.tracking_uri(tracking_uri), what, writable=True)
    if address is None:  # local: the driver's files are the trials' files
        doors.check_dataset(config)
    doors.check_address(address)
    client = doors.open_store(uri, what)
    init_ray(address)
    name = f"{doc.get('search', 'export')}-reproduce-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = tracking.experiment_id(client, doc.get("study") or "reproduce")
    parent = client.create_run(exp, run_name=name, tags={
        tracking.ROLE: "reproduce", tracking.SEARCH: name, "rs.source_search": str(doc.get("search")),
        "rs.family": doc["family"], "rs.git_commit": tracking.git_commit()}).info.run_id
    client.log_artifact(parent, str(best))
    logger = MlflowTrialLogger(uri, parent, name, config["epochs"], "val_acc", "max")
    progress = LiveProgress("val_acc", "max", len(seeds), config["epochs"])
    trainable = tune.with_resources(resolve_trainable(doc["family"]), {"cpu": cpus, "gpu": gpus})
    tuner = tune.Tuner(
        trainable, param_space={**config, "seed": tune.grid_search(list(seeds))},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(Path(runs_dir).resolve()), verbose=0,
                                  callbacks=[logger, progress],
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )
    results = tuner.fit()
    rows = [{"seed": r.config["seed"], **{k: r.metrics.get(k) for k in SUMMARY_METRICS}} for r in results
            if not r.error]
    per_seed, summary = summarize(rows)
    for metric, row in summary.iterrows():
        client.log_metric(parent, f"{metric}_mean", float(row["mean"]))
        client.log_metric(parent, f"{metric}_std", float(row["std"]) if row["std"] == row["std"] else 0.0)
    client.set_terminated(parent, "FINISHED")
    print(f"\nreproduced '{doc.get('search')}' at {config['epochs']} epochs on seeds {list(seeds)}:")
    print(per_seed.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for metric, row in summary.iterrows():
        print(f"  {metric}: {row['mean']:.4f} ± {row['std']:.4f}")
    return per_seed, summary
