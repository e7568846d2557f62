"""Study files: every shipped study validates, every malformed one fails clearly, spaces sample right.

The malformed corpus lives in tests/malformed_studies/: each file starts with ``# expect: <fragment>``,
a fragment the error message must contain (usually the key path and its line).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.cli import main
from spaces.study import (
    StudyError,
    check_sampler,
    condition_holds,
    define_by_run,
    list_studies,
    load_study,
    parse_study,
    sample_config,
)
from trainables.core.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "spaces"
MALFORMED = Path(__file__).resolve().parents[1] / "malformed_studies"
SHIPPED = list_studies(SPACES)
BROKEN = sorted(MALFORMED.glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def expected_fragment(path: Path) -> str:
    m = re.match(r"#\s*expect:\s*(.+?)\s*$", path.read_text().splitlines()[0])
    assert m, f"{path.name}: the first line must be '# expect: <fragment>'"
    return m.group(1)


def ask_configs(study, n: int = 200, seed: int = 0) -> list[dict]:
    """``n`` full trial configs drawn at random through the study's define-by-run space."""
    opt = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [sample_config(study, opt.ask()) for _ in range(n)]


# ---------------------------------------------------------------- shipped studies
# The CIFAR-10 optimization study's comparisons, each as a CPU-sized Fashion-MNIST study and a
# full-budget CIFAR-10 one.
COMPARISONS = ("activations", "losses", "optimizers", "schedulers", "batchnorm", "vgg_batchnorm", "regularization")
COMPARISON_STUDIES = [SPACES / f"{prefix}_{c}.yaml" for c in COMPARISONS for prefix in ("fmnist", "cifar10")]


def test_the_comparisons_ship_in_both_sizes():
    assert set(COMPARISON_STUDIES) <= set(SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_study_validates(path, capsys, monkeypatch):
    from search import machine

    # the GPU studies fit a GPU machine; on a CPU machine `validate` says they do not (tests/search/test_fail_fast.py)
    monkeypatch.setattr(machine, "local_resources", lambda: {machine.CPU: 64.0, machine.GPU: 8.0})
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    study = load_study(path)
    assert study.name == path.stem
    assert study.description.strip()
    if all(p.is_discrete() for p in study.search.values()):
        assert main(["validate", str(path), "--sampler", "grid"]) == 0, capsys.readouterr().err
    # every conditional branch yields a configuration the trainer accepts
    for config in ask_configs(study, n=40):
        TrainConfig.from_dict(config)


@pytest.mark.parametrize("path", COMPARISON_STUDIES, ids=lambda p: p.name)
def test_comparison_study_sizes(path):
    study = load_study(path)
    assert (study.objective.metric, study.objective.mode) == ("val_acc", "max")
    if study.dataset == "fashion_mnist":  # a 2-core laptop in a few minutes
        assert "lr" in study.search
        assert study.resources.gpus == 0 and study.resources.cpus == 1
        assert study.fixed["max_train_samples"] <= 10000
        assert study.budget.max_epochs <= 4 and 8 <= study.budget.num_samples <= 12
    else:  # a GPU cluster at the seed study's budget
        assert study.dataset == "cifar10" and study.resources.gpus > 0
        assert "max_train_samples" not in study.fixed
        assert 30 <= study.budget.max_epochs <= 50
        if path.stem in SEED_003_BASE_RECIPE:  # the seed compares these under Adam at 1e-3: every arm, one lr
            assert study.fixed["lr"] == 0.001 and "lr" not in study.search
            assert study.budget.num_samples == study.grid_size() and study.budget.max_epochs == 50
        else:
            assert "lr" in study.search and 20 <= study.budget.num_samples <= 40


SEED_003_BASE_RECIPE = ("cifar10_activations", "cifar10_optimizers", "cifar10_schedulers")


def test_every_shipped_study_says_which_seed_section_it_follows():
    for path in SHIPPED:
        follows = load_study(path).follows
        assert follows.startswith(("seed 00", "own:")), f"{path.name}: follows: {follows!r}"


# ---------------------------------------------------------------- malformed studies
def test_malformed_corpus_is_large_enough():
    assert len(BROKEN) >= 18


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_malformed_study_fails_clearly(path, capsys):
    fragment = expected_fragment(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err
    assert err.startswith("error: ")
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert fragment in str(info.value)


def test_run_validates_before_starting_ray(tmp_path, capsys):
    import ray

    code = main(["run", str(MALFORMED / "low_gt_high.yaml"), "--runs-dir", str(tmp_path), "--quiet",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "low (0.5) > high (0.1)" in err and "Traceback" not in err
    assert not ray.is_initialized()
    assert not any(tmp_path.iterdir())


def test_console_script_exits_2_without_traceback():
    script = Path(sys.executable).with_name("search")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "search"]
    path = MALFORMED / "unknown_activation_choice.yaml"
    proc = subprocess.run([*cmd, "validate", str(path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert expected_fragment(path) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no such study file" in err and "Traceback" not in err


# ---------------------------------------------------------------- messages and line numbers
GOOD = """\
name: inline
family: optimization
dataset: digits
budget:
  num_samples: 4
  max_epochs: 3
fixed:
  model: cnn
  filters: [8, 16]
search:
  optimizer: {type: choice, values: [sgd, adam]}
  lr: {type: loguniform, low: 0.001, high: 0.1}
  momentum: {type: uniform, low: 0.5, high: 0.95, when: {optimizer: sgd}}
"""


def test_line_numbers_point_at_the_key():
    text = GOOD.replace("low: 0.001, high: 0.1", "low: 0.5, high: 0.1")
    with pytest.raises(StudyError) as info:
        parse_study(text, "inline.yaml")
    assert info.value.problems == ["search.lr (line 12): low (0.5) > high (0.1)"]
    assert str(info.value).startswith("inline.yaml: invalid study file")

    text = GOOD.replace("  filters: [8, 16]\n", "  filters: [8, 16]\n  activation: prelu\n")
    with pytest.raises(StudyError) as info:
        parse_study(text)
    assert info.value.problems[0].startswith("fixed.activation (line 10): unknown activation 'prelu'")


def test_every_problem_is_reported_at_once():
    text = GOOD.replace("num_samples: 4", "num_samples: 0").replace("max_epochs: 3", "max_epochs: -1")
    with pytest.raises(StudyError) as info:
        parse_study(text)
    assert [p.split(" (line")[0] for p in info.value.problems] == ["budget.num_samples", "budget.max_epochs"]
    assert "(line 5)" in info.value.problems[0] and "(line 6)" in info.value.problems[1]


def test_a_missing_key_has_no_line():
    with pytest.raises(StudyError) as info:
        parse_study(GOOD.replace("dataset: digits\n", ""))
    assert info.value.problems == ["(file): required key 'dataset' is missing"]


# ---------------------------------------------------------------- conditional parameters
def test_condition_holds():
    assert condition_holds(None, {})
    assert condition_holds({"loss": "focal"}, {"loss": "focal"})
    assert not condition_holds({"loss": "focal"}, {"loss": "mse"})
    assert condition_holds({"optimizer": ["sgd", "sign_sgd"]}, {"optimizer": "sign_sgd"})
    assert not condition_holds({"optimizer": "sgd"}, {})


def test_optimizer_conditionals_appear_only_when_their_condition_holds():
    study = load_study(SPACES / "fmnist_optimizers.yaml")
    configs = ask_configs(study)
    seen = {c["optimizer"] for c in configs}
    assert seen == {"sgd", "adam", "adamw", "sign_sgd"}
    for c in configs:
        assert ("momentum" in c) == (c["optimizer"] in ("sgd", "sign_sgd")), c
        assert ("nesterov" in c) == (c["optimizer"] == "sgd"), c
        assert 1e-4 <= c["lr"] <= 0.3
    assert any("momentum" in c for c in configs) and any("momentum" not in c for c in configs)
    assert any("nesterov" in c for c in configs) and any("nesterov" not in c for c in configs)


def test_loss_conditionals_appear_only_when_their_condition_holds():
    study = load_study(SPACES / "fmnist_losses.yaml")
    configs = ask_configs(study, seed=1)
    for c in configs:
        assert ("focal_gamma" in c) == (c["loss"] == "focal"), c
        assert ("label_smoothing" in c) == (c["loss"] == "label_smoothing"), c
    for key in ("focal_gamma", "label_smoothing"):
        assert any(key in c for c in configs) and any(key not in c for c in configs)


def test_condition_on_a_fixed_parameter():
    study = parse_study(GOOD.replace("  model: cnn\n", "  model: cnn\n  optimizer: sgd\n")
                        .replace("  optimizer: {type: choice, values: [sgd, adam]}\n", ""))
    assert all("momentum" in c for c in ask_configs(study, n=10))


def test_define_by_run_constants():
    study = load_study(SPACES / "fmnist_activations.yaml")
    trial = optuna.create_study().ask()
    constants = define_by_run(study, extra={"marker": 1})(trial)
    assert constants["dataset"] == "fashion_mnist"
    assert constants["epochs"] == study.budget.max_epochs
    assert constants["seed"] == study.seed
    assert constants["marker"] == 1
    for name, value in study.fixed.items():
        assert constants[name] == value
    assert set(trial.params) == set(study.search)  # searched values come from the trial, not the constants
    assert not set(study.search) & set(constants)
    config = sample_config(study, optuna.create_study().ask())
    assert config["activation"] in study.search["activation"].values
    TrainConfig.from_dict(config)


# ---------------------------------------------------------------- samplers and overrides
def test_grid_sampler_rejects_continuous_params(capsys):
    study = load_study(SPACES / "fmnist_optimizers.yaml")
    problems = check_sampler(study, "grid")
    assert any(p.startswith("search.lr:") and "loguniform" in p for p in problems)
    assert any(p.startswith("search.momentum:") for p in problems)
    assert check_sampler(study, "tpe") == []

    grid = load_study(SPACES / "fmnist_activations.yaml")
    assert check_sampler(grid, "grid") == []
    assert grid.grid_size() == 12

    assert main(["validate", str(SPACES / "fmnist_optimizers.yaml"), "--sampler", "grid"]) == 2
    err = capsys.readouterr().err
    assert "grid sampler needs choice/grid/int" in err and "Traceback" not in err


def test_grid_values_imply_the_grid_sampler_and_refuse_another(tmp_path, capsys):
    text = (SPACES / "generalization_fmnist_finetune.yaml").read_text()
    assert "sampler:" not in text
    study = load_study(SPACES / "generalization_fmnist_finetune.yaml")
    assert study.sampler == "grid" and check_sampler(study, study.sampler) == []
    assert study.grid_size() == 6  # every grid point once, whatever num_samples says
    assert load_study(SPACES / "fmnist_optimizers.yaml").sampler == "tpe"  # no grid values: the default stays

    problems = check_sampler(study, "tpe")
    assert sorted(p.split(":")[0] for p in problems) == ["search.finetune_per_class", "search.freeze"]
    assert all("grid sampler" in p for p in problems)
    explicit = tmp_path / "explicit_tpe.yaml"
    explicit.write_text(text + "sampler: tpe\n")
    assert main(["validate", str(explicit)]) == 2
    err = capsys.readouterr().err
    assert "search.freeze" in err and "grid sampler" in err and "Traceback" not in err
    assert main(["validate", str(SPACES / "generalization_fmnist_finetune.yaml"), "--sampler", "random"]) == 2
    capsys.readouterr()
    choice = tmp_path / "choice_tpe.yaml"
    choice.write_text(text.replace("type: grid", "type: choice") + "sampler: tpe\n")
    assert main(["validate", str(choice)]) == 0, capsys.readouterr().err


def test_parse_study_overrides():
    study = parse_study(GOOD, overrides={"budget.num_samples": 7, "resources.gpus": 0.5, "seed": 3})
    assert study.budget.num_samples == 7
    assert study.budget.max_epochs == 3  # the rest of the section is kept
    assert study.resources.gpus == 0.5
    assert study.seed == 3
    assert parse_study(GOOD).budget.num_samples == 4
    with pytest.raises(StudyError) as info:
        parse_study(GOOD, overrides={"budget.num_samples": 0})
    assert info.value.problems[0].startswith("budget.num_samples")


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; a study file reads it as the number it means.
    study = parse_study(GOOD.replace("type: choice, values: [sgd, adam]", "type: choice, values: [sgd]")
                        .replace("low: 0.001, high: 0.1", "low: 1e-4, high: 1E-1")
                        + "  weight_decay: {type: choice, values: [0, 5e-4, 1e-3]}\n")
    assert study.search["lr"].low == 1e-4 and study.search["lr"].high == 0.1
    assert study.search["weight_decay"].values == [0, 5e-4, 1e-3]
    assert all(isinstance(c["weight_decay"], (int, float)) for c in ask_configs(study, n=20))


def test_sampler_names_come_from_one_registry_read_by_schema_and_cli(tmp_path, capsys):
    """A sampler registered once is accepted by the study schema, the CLI and the runner; its declared
    needs (two objectives, a finite space) drive validation, not its name."""
    from search.cli import build_parser
    from spaces.samplers import SAMPLERS, Sampler

    study = load_study(SPACES / "quickstart.yaml")
    SAMPLERS["probe_pair"] = Sampler(lambda s: None, objectives=2, finite_space=True)
    try:
        problems = check_sampler(study, "probe_pair")
        assert any(p.startswith("objective.pareto_with: the probe_pair sampler") for p in problems)
        assert any("the probe_pair sampler needs choice/grid/int" in p for p in problems) == any(
            not p.is_discrete() for p in study.search.values())
        args = build_parser().parse_args(["validate", "x.yaml", "--sampler", "probe_pair"])
        assert args.sampler == "probe_pair"
    finally:
        del SAMPLERS["probe_pair"]
    bad = tmp_path / "bad.yaml"
    bad.write_text((SPACES / "quickstart.yaml").read_text() + "\nsampler: annealing\n")
    with pytest.raises(StudyError) as e:
        load_study(bad)
    assert "sampler" in str(e.value) and "choose one of: tpe, random, grid, cmaes, nsga2" in str(e.value)
