"""The adversarial family's report section: clean vs robust accuracy of every trial, Optuna's Pareto front
of the two, and the masking flag beside each robust number (``Family.report``)."""

from __future__ import annotations

import pandas as pd

from trainables.core.metric_names import CLEAN_ACC, GRADIENT_MASKING, INDEP_EPS, robust_metric_name

from . import optuna_plots, tables
from .sections import ReportContext


def robust_metric(df: pd.DataFrame) -> str | None:
    """PGD accuracy at the independent check's eps (the family's headline robust number), else the largest eps."""
    if INDEP_EPS in df and df[INDEP_EPS].notna().any():
        name = robust_metric_name("pgd", float(df[INDEP_EPS].dropna().iloc[0]))
        if name in df:
            return name
    return None


def sections(ctx: ReportContext) -> list[str]:
    df = ctx.trials
    robust = robust_metric(df)
    if robust is None or CLEAN_ACC not in df:
        return ctx.skip("Clean vs robust", "no trial logged clean_acc and the PGD accuracy at the checked eps")
    md = ["## Clean vs robust", "",
          f"Every scored trial's final `{CLEAN_ACC}` against `{robust}`; the Pareto front (no trial better on both) "
          "is Optuna's. Trials flagged for gradient masking (our PGD beats the independent attack by > 2 points) "
          "are listed below: their robust number is not to be trusted.", ""]
    study = optuna_plots.rebuild(df, ctx.info.space, [CLEAN_ACC, robust], ["max", "max"])
    if len(study.trials) < 1:
        return md + ctx.skip("Clean vs robust scatter", "no trial holds both numbers")
    optuna_plots.pareto_front(study, ctx.out / "adversarial_pareto.png", [CLEAN_ACC, robust])
    md += ctx.image("adversarial_pareto.png", f"{CLEAN_ACC} vs {robust}, Pareto front")
    if GRADIENT_MASKING in df:
        flagged = df[df[GRADIENT_MASKING] == 1.0]
        md += [f"Gradient masking flagged in {len(flagged)} of {int(df[GRADIENT_MASKING].notna().sum())} checked "
               "trials" + (":" if len(flagged) else "."), ""]
        if len(flagged):
            md += tables.to_markdown(flagged[["trial", CLEAN_ACC, robust, GRADIENT_MASKING]]).splitlines() + [""]
    return md


__all__ = ["sections", "robust_metric"]
