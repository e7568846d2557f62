"""Metric names are said once (``trainables/core/metric_names.py``): the emitters and the families' declarations
take them from there, so what a study may name is what a trial reports, and no other module spells one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trainables.core import make_trainer, train
from trainables.core import metric_names as names
from trainables.core.config import TrainConfig
from trainables.core.losses import build_terms
from trainables.families import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
TINY = {"dataset": "digits", "filters": [4, 8], "max_train_samples": 128, "device": "cpu", "batch_size": 64,
        "epochs": 2}
# Spelled elsewhere as other things: "lr" is a config field, "diverged" a trial state (records/states.py).
SPELLED = (set(names.EPOCH_METRICS) | set(names.TEST_METRICS) | {names.CLEAN_ACC} | set(names.FINETUNE_METRICS)
           | set(names.LANDSCAPE_METRICS) | set(names.GAUSSIANITY_METRICS) | set(names.INDEPENDENT_METRICS)) - {names.LR}
PACKAGES = ("trainables", "spaces", "search", "analysis", "records")


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def spelled_outside(root: Path = ROOT) -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            if path == root / "trainables" / "core" / "metric_names.py":
                continue
            tree = ast.parse(path.read_text())
            docs = _docstrings(tree)
            out += [f"{path.relative_to(root)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and n.value in SPELLED and id(n) not in docs]
    return out


def test_no_metric_name_is_spelled_outside_its_module():
    assert not spelled_outside(), spelled_outside()


def test_the_grep_finds_a_spelled_name(tmp_path):
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "x.py").write_text('"""val_acc in a docstring is prose."""\nBEST = "val_acc"\n')
    assert spelled_outside(tmp_path) == ["analysis/x.py:2: 'val_acc'"]


@pytest.mark.parametrize("config", [
    {},
    {"l1": 1e-4, "landscape_probe": True},
    {"eval_eps": [0.0, 0.05], "eval_samples": 32, "eval_pgd_steps": 2, "circle_weight": 0.1},
    {"eval_datasets": ["digits:rotate@2"]},
])
def test_the_family_declares_exactly_what_the_trainer_reports(config):
    result = train({**TINY, **config})
    first, last = result.history[0], result.history[-1]
    declared = FAMILIES["optimization"].metrics({**TINY, **config})
    assert list(first)[1:] != [] and set(first) - {"epoch"} == set(declared)
    assert set(last) - {"epoch"} == set(declared) | set(names.TEST_METRICS)


def test_regnet_declares_its_terms_and_gaussianity():
    config = {**TINY, "head": "gaussian", "kurtosis_factor": 0.1, "batch_size": 128, "epochs": 1}
    from trainables.core.gaussian_head import gaussianity_evaluator
    from trainables.families import trial_config

    trainer = make_trainer(trial_config(config), evaluators=[gaussianity_evaluator])
    history = trainer.fit().history
    assert set(history[0]) - {"epoch"} - set(names.TEST_METRICS) == set(FAMILIES["regnet"].metrics(config))


@pytest.mark.parametrize("config", [{}, {"l1": 1e-3}, {"circle_weight": 0.5}, {"head": "gaussian"},
                                    {"head": "gaussian", "kurtosis_factor": 0.0}, {"l1": 1e-3, "head": "gaussian"}])
def test_term_metrics_name_the_terms_the_builders_build(config):
    cfg = TrainConfig.from_dict(config, strict=False)
    assert names.term_metrics(cfg) == tuple(names.term_metric(t.name) for t in build_terms(cfg))


def test_parse_metric_name_reads_the_formatter_back():
    for attack in names.ATTACK_METRICS:
        assert names.parse_metric_name(names.robust_metric_name(attack, 8 / 255)) == (attack, float(names.eps_tag(8 / 255)))
    assert names.parse_metric_name(names.CLEAN_ACC) is None and names.parse_metric_name("pgd_acc_epsx") is None
