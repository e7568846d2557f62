"""Family report sections from plain trial tables (no store): the adversarial scatter and masking list, and the
family hook that picks them (no report code tests a family's name)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from analysis import adversarial, report
from analysis.sections import ReportContext
from trainables.families import FAMILIES

SPACE = {"adv_beta": {"type": "uniform", "low": 0.0, "high": 1.0}}


def _ctx(tmp_path, df):
    info = SimpleNamespace(name="s", uri="", fixed={}, space=SPACE, family="adversarial", best_trial="a",
                           target="pgd_acc_eps0.1", shown_column="best_pgd_acc_eps0.1")
    return ReportContext(info, df, tmp_path, client=None, log=lambda m: None, best_model=False)


def test_adversarial_section_plots_the_front_and_lists_masked_trials(tmp_path):
    df = pd.DataFrame({"trial": ["a", "b", "c"], "adv_beta": [0.1, 0.5, 0.9], "outcome": ["completed"] * 3,
                       "clean_acc": [0.9, 0.8, 0.7], "pgd_acc_eps0.1": [0.3, 0.5, 0.4], "indep_eps": [0.1] * 3,
                       "gradient_masking": [0.0, 1.0, 0.0]})
    md = "\n".join(adversarial.sections(_ctx(tmp_path, df)))
    assert (tmp_path / "adversarial_pareto.png").stat().st_size > 5000
    assert "Gradient masking flagged in 1 of 3 checked trials:" in md
    assert "| b " in md and "| a " not in md


def test_no_robust_numbers_skips_the_section_and_says_why(tmp_path):
    df = pd.DataFrame({"trial": ["a"], "adv_beta": [0.1], "outcome": ["completed"], "clean_acc": [0.9]})
    ctx = _ctx(tmp_path, df)
    md = adversarial.sections(ctx)
    assert ctx.skipped and ctx.skipped[0][0] == "Clean vs robust" and "skipped" in md[0]


def test_the_report_asks_the_family_for_its_sections(tmp_path, monkeypatch):
    import analysis.generalization as gen

    assert {f.name: f.report for f in FAMILIES.values()} == {
        "optimization": "", "adversarial": "analysis.adversarial:sections",
        "generalization": "analysis.generalization:sections", "regnet": "analysis.regnet:sections"}
    monkeypatch.setattr(gen, "sections", lambda ctx: ["## from the generalization hook"])
    ctx = _ctx(tmp_path, pd.DataFrame())
    ctx.info.family = "generalization"
    assert report._family_sections(ctx) == ["## from the generalization hook"]
    ctx.info.family = "optimization"
    assert report._family_sections(ctx) == []
