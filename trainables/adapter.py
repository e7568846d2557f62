"""The one adapter every family's trainable uses: Tune config dict -> core Trainer -> tune.report.

Every epoch it reports the metrics with a checkpoint, so ASHA can stop the trial and Ray can
resume it from ``tune.get_checkpoint()`` after a failure. A family may add metrics at the last
epoch (``final_metrics``), e.g. the adversarial family's independent robustness check.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import ray
import torch
from ray import tune

from trainables.core import TrainConfig, Trainer
from trainables.core.run import make_trainer
from trainables.core.trainer import Evaluator
from trainables.objective import OBJECTIVE_KEY, score

CHECKPOINT_FILE = "checkpoint.pt"
NON_TRAINING_KEYS = {OBJECTIVE_KEY}  # keys the search layer adds that are not training parameters

FinalMetrics = Callable[[Trainer, dict[str, float]], dict[str, float]]
FinalFiles = Callable[[Trainer, Path], None]  # writes files into the last checkpoint's folder


def config_from_trial(config: dict) -> TrainConfig:
    return TrainConfig.from_dict({k: v for k, v in config.items() if k not in NON_TRAINING_KEYS})


def run_trial(config: dict, final_metrics: FinalMetrics | None = None, evaluators: Iterable[Evaluator] = (),
              final_files: FinalFiles | None = None) -> None:
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "Checkpoint created" line per epoch
    # As many torch threads as CPUs given to this trial: more would fight the trials beside it.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    trainer = make_trainer(config_from_trial(config), evaluators=evaluators)  # Ray hides GPUs not assigned to this trial
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_checkpoint(Path(d) / CHECKPOINT_FILE)
    spec = config.get(OBJECTIVE_KEY)

    def report(metrics, trainer):
        last = trainer.step == trainer.total_epochs
        if final_metrics is not None and last:
            metrics = {**metrics, **final_metrics(trainer, metrics)}
        if spec:
            metrics = {**metrics, "objective": score(metrics, spec)}
        with tempfile.TemporaryDirectory() as d:
            trainer.save_checkpoint(Path(d) / CHECKPOINT_FILE)
            if final_files is not None and last:
                final_files(trainer, Path(d))  # kept with the checkpoint: the best trial's go to MLflow
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    trainer.fit(report)
