"""Comparison tables: how a metric varies with one searched parameter, as Markdown or CSV.

``to_markdown`` is a small formatter of its own: pandas' ``DataFrame.to_markdown`` needs
``tabulate``, which is not a dependency of this project.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

ABSENT = "(not applicable)"  # the group of trials where a conditional parameter did not exist


def _completed(trials: pd.DataFrame) -> pd.Series:
    if "outcome" in trials:
        return trials["outcome"].eq("completed")
    if "state" in trials:
        return trials["state"].astype(str).eq("completed")
    return pd.Series(False, index=trials.index)


def compare(trials: pd.DataFrame, by: str, metric: str, mode: str = "max") -> pd.DataFrame:
    """Per value of the parameter ``by``: trials, completed trials, mean ± std and best of ``metric``.

    Sorted best mean first (``mode`` max or min), ties broken by the best value. Trials
    stopped early count too: under ASHA a value whose trials are stopped early *is* worse,
    and ``completed`` shows how many ran the full budget. Mean and std skip missing values
    (failed trials); std is NaN for a single value.
    """
    if by not in trials:
        raise KeyError(f"no column '{by}' in the trials table; columns: {', '.join(map(str, trials.columns))}")
    if metric not in trials:
        raise KeyError(f"no column '{metric}' in the trials table; columns: {', '.join(map(str, trials.columns))}")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    key = trials[by].map(lambda v: ABSENT if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    values = pd.to_numeric(trials[metric], errors="coerce")
    frame = pd.DataFrame({by: key, "value": values, "completed": _completed(trials)})
    groups = frame.groupby(by, sort=False)
    table = pd.DataFrame({
        "n": groups.size(),
        "completed": groups["completed"].sum().astype(int),
        "mean": groups["value"].mean(),
        "std": groups["value"].std(),
        "best": groups["value"].max() if mode == "max" else groups["value"].min(),
    })
    table = table.sort_values(["mean", "best"], ascending=mode == "min", na_position="last")
    table.attrs.update(metric=metric, mode=mode)
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
