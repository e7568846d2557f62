"""Comparison tables: how a metric varies with one searched parameter, as Markdown or CSV.

``to_markdown`` is a small formatter of its own: pandas' ``DataFrame.to_markdown`` needs
``tabulate``, which is not a dependency of this project.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from records.states import Outcome

ABSENT = "(not applicable)"  # the group of trials where a conditional parameter did not exist


def _completed(trials: pd.DataFrame) -> pd.Series:
    if "outcome" in trials:
        return trials["outcome"].eq(Outcome.COMPLETED.value)
    if "state" in trials:
        return trials["state"].astype(str).eq(Outcome.COMPLETED.value)
    return pd.Series(False, index=trials.index)


def compare(trials: pd.DataFrame, by: str, metric: str, mode: str = "max", *, at_common: pd.Series | None = None,
            common_epoch: int | None = None) -> pd.DataFrame:
    """Per value of the parameter ``by``: trials, how many ran the full budget, and ``metric``.

    ``metric`` is each trial's best value (its best epoch, whatever budget it got). Under early
    stopping that mixes budgets, so ``at_common`` (each trial's value at ``common_epoch``, the last
    epoch every scored trial reached: ``records.at_common_epoch``) adds like-with-like columns
    ``mean_at_e<E>``, ``std_at_e<E>`` and the table is sorted by them, best first; otherwise by
    ``mean_best``. Missing values (failed, diverged) are skipped; std is NaN for a single value.
    """
    for col in (by, metric):
        if col not in trials:
            raise KeyError(f"no column '{col}' in the trials table; columns: {', '.join(map(str, trials.columns))}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    key = trials[by].map(lambda v: ABSENT if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    frame = pd.DataFrame({by: key, "value": pd.to_numeric(trials[metric], errors="coerce"),
                          "full": _completed(trials)})
    if at_common is not None:
        frame["common"] = pd.to_numeric(at_common, errors="coerce")
    groups = frame.groupby(by, sort=False)
    columns = {"n": groups.size(), "full_budget": groups["full"].sum().astype(int)}
    sort = ["mean_best", "best"]
    if at_common is not None:
        e = f"e{common_epoch}" if common_epoch is not None else "common"
        columns.update({f"mean_at_{e}": groups["common"].mean(), f"std_at_{e}": groups["common"].std()})
        sort = [f"mean_at_{e}", "mean_best"]
    columns.update({"mean_best": groups["value"].mean(), "std_best": groups["value"].std(),
                    "best": groups["value"].max() if mode == "max" else groups["value"].min()})
    table = pd.DataFrame(columns).sort_values(sort, ascending=mode == "min", na_position="last")
    table.attrs.update(metric=metric, mode=mode, common_epoch=common_epoch)
    return table.reset_index()


def _cell(value, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        text = format(value, floatfmt)
        return f"{value:.1f}" if value.is_integer() and text.lstrip("-").isdigit() else text
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, index: bool = False, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned, missing values blank."""
    frame = df.reset_index() if index else df
    headers = [str(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns]
    rows = [[_cell(v, floatfmt) for v in row] for row in frame.itertuples(index=False, name=None)]
    widths = [max([len(h), 3] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule] + [line(r) for r in rows]) + "\n"


def to_csv(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path
