"""The Pareto front of a search over two objectives (e.g. PGD accuracy vs clean accuracy)."""

from __future__ import annotations

import pandas as pd


def pareto_mask(df: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.Series:
    """True for rows no other row dominates (at least as good on all objectives, better on one).

    ``objectives`` is ``[(column, "max" | "min"), ...]``; rows with a missing value are never on the front.
    """
    signs = [(col, 1.0 if mode == "max" else -1.0) for col, mode in objectives]
    values = pd.DataFrame({col: df[col].astype(float) * sign for col, sign in signs})
    valid = values.notna().all(axis=1)
    v = values[valid].to_numpy()
    on_front = pd.Series(False, index=df.index)
    for i, row in zip(values[valid].index, v):
        dominated = ((v >= row).all(axis=1) & (v > row).any(axis=1)).any()
        on_front[i] = not dominated
    return on_front
