"""The catalog: validation reads the registries' names and fields without importing the components (torch),
from a file generated from the live registries, and a component registered at run time still validates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.core import catalog
from trainables.core.config import TrainConfig, acting_fields
from trainables.core.registry import load_components, registry

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "ray", "mlflow")


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_checked_in_catalog_is_what_the_registries_hold():
    """Built in a fresh process (no test's run-time registration in it): the file equals the live registries."""
    live = json.loads(_python("import json; from trainables.core.catalog import build; print(json.dumps(build()))"))
    recorded = json.loads(catalog.PATH.read_text())
    assert recorded == live, f"trainables/core/catalog.json is stale: regenerate it with `{catalog.REGENERATE}`"


def test_validate_imports_no_torch_ray_or_mlflow():
    studies = ["spaces/quickstart.yaml", "spaces/generalization_fmnist_corruptions.yaml",
               "spaces/fmnist_regnet_kurtosis.yaml", "spaces/fmnist_adversarial_training.yaml",
               "spaces/generalization_fmnist_finetune.yaml",
               "tests/malformed_studies/unknown_corruption.yaml"]
    out = _python(
        "import contextlib, io, sys\n"
        "from search.cli import main\n"
        f"codes = [main(['validate', s]) for s in {studies!r}]\n"
        f"print(codes, sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n")
    assert out.strip().splitlines()[-1] == "[0, 0, 0, 0, 0, 2] []"


def test_the_catalog_view_gives_what_the_live_registries_give():
    """Out of the process that loaded the components, the same acting fields and the same refusals."""
    load_components()
    cases = [{"optimizer": "adam", "model": "resnet18"}, {"head": "gaussian", "eval_eps": [0.1]},
             {"dataset": "fashion_mnist", "eval_datasets": ["fashion_mnist:rotate@2", "mnist"], "augment": "affine"}]
    live = [sorted(acting_fields(c)) for c in cases]
    assert catalog.entries("loss") is registry("loss")  # loaded: the live registry itself
    code = ("from trainables.core.config import acting_fields, TrainConfig, ConfigError\n"
            f"print([sorted(acting_fields(c)) for c in {cases!r}])\n"
            "try:\n    TrainConfig.from_dict({'dataset': 'digits:rotate@9', 'loss': 'focal2'})\n"
            "except ConfigError as e:\n    print(e)\n")
    out = _python(code).splitlines()
    assert out[0] == str(live)
    with pytest.raises(ValueError) as refused:
        TrainConfig.from_dict({"dataset": "digits:rotate@9", "loss": "focal2"})
    assert out[1:] == str(refused.value).splitlines() and len(out) == 4


def test_a_component_registered_at_run_time_validates_without_the_components_loaded():
    out = _python(
        "import sys\n"
        "from trainables.core.registry import register\n"
        "from trainables.core.config import TrainConfig, acting_fields\n"
        "@register('loss', 'tempered')\n"
        "def tempered(*, focal_gamma): ...\n"
        "cfg = TrainConfig.from_dict({'loss': 'tempered', 'focal_gamma': 3.0})\n"
        "print('focal_gamma' in acting_fields(cfg), 'focal_alpha' in acting_fields(cfg))\n"
        "print(TrainConfig.from_dict({'loss': 'focal'}).loss, 'torch' in sys.modules)\n")
    assert out.splitlines() == ["True False", "focal False"]
