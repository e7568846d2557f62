"""Multi-objective searches: ``sampler: nsga2`` optimizes the objective and ``pareto_with`` together."""

from __future__ import annotations

import textwrap

import pytest

from search.cli import main
from spaces.study import check_sampler, parse_study

STUDY = textwrap.dedent("""\
    name: mo
    family: adversarial
    dataset: digits
    objective:
      metric: pgd_acc_eps0.1
      pareto_with: {metric: clean_acc, mode: max}
    budget: {num_samples: 3, max_epochs: 1, scheduler: none}
    fixed: {model: cnn, filters: [8, 16], adv_eps: 0.1, adv_steps: 2, eval_eps: [0.1], eval_pgd_steps: 2,
            eval_samples: 50}
    search:
      adv_mode: {type: choice, values: [none, pgd]}
      adv_beta: {type: uniform, low: 0.0, high: 1.0, when: {adv_mode: pgd}}
    sampler: nsga2
""")


def test_nsga2_needs_a_second_objective_and_no_asha():
    assert check_sampler(parse_study(STUDY), "nsga2") == []
    lone = parse_study(STUDY.replace("  pareto_with: {metric: clean_acc, mode: max}\n", "")
                       .replace("scheduler: none", "scheduler: asha"))
    problems = check_sampler(lone, "nsga2")
    assert any(p.startswith("objective.pareto_with:") for p in problems)
    assert any(p.startswith("budget.scheduler:") for p in problems)
    assert check_sampler(lone, "tpe") == []


def test_validate_refuses_nsga2_without_pareto_with(tmp_path, capsys):
    path = tmp_path / "mo.yaml"
    path.write_text(STUDY.replace("  pareto_with: {metric: clean_acc, mode: max}\n", ""))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "objective.pareto_with" in err and "Traceback" not in err


def test_nsga2_searcher_sees_both_metrics():
    pytest.importorskip("ray")
    import optuna

    from search.tuner import make_searcher

    searcher = make_searcher(parse_study(STUDY), "nsga2")
    assert searcher.metric == ["pgd_acc_eps0.1", "clean_acc"] and searcher.mode == ["max", "max"]
    assert isinstance(searcher._sampler, optuna.samplers.NSGAIISampler)
    assert searcher._sampler._population_size == 4  # a quarter of the budget, at least 4: generations evolve
    assert make_searcher(parse_study(STUDY), "tpe").metric == "pgd_acc_eps0.1"


@pytest.mark.slow
def test_nsga2_search_end_to_end(tmp_path):
    import ray

    from search.runner import start_search

    path = tmp_path / "mo.yaml"
    path.write_text(STUDY)
    try:
        out = start_search(path, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", runs_dir=tmp_path / "runs",
                           name="mo", quiet=True)
    finally:
        ray.shutdown()
    assert len(out.table) == 3 and out.table["pareto"].any()
    assert set(out.table["state"]) == {"completed"}
