"""Ray Tune trainable for the optimization family: a thin adapter over ``trainables.core.train``.

Every epoch it calls ``tune.report`` with the metrics and a checkpoint, so ASHA can stop the
trial and Ray can resume it from ``tune.get_checkpoint()`` after a failure.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ray import tune

from trainables.core import TrainConfig, Trainer
from trainables.objective import OBJECTIVE_KEY, score

CHECKPOINT_FILE = "checkpoint.pt"
# Keys Tune adds or the search layer uses that are not training parameters.
NON_TRAINING_KEYS = {OBJECTIVE_KEY}


def config_from_trial(config: dict) -> TrainConfig:
    return TrainConfig.from_dict({k: v for k, v in config.items() if k not in NON_TRAINING_KEYS})


def run_trial(config: dict) -> None:
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "Checkpoint created" line per epoch
    trainer = Trainer(config_from_trial(config))  # Ray hides GPUs not assigned to this trial
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_checkpoint(Path(d) / CHECKPOINT_FILE)

    spec = config.get(OBJECTIVE_KEY)

    def report(metrics, trainer):
        if spec:
            metrics = {**metrics, "objective": score(metrics, spec)}
        with tempfile.TemporaryDirectory() as d:
            trainer.save_checkpoint(Path(d) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    trainer.fit(report)


def train_optimization(config: dict) -> None:
    run_trial(config)
