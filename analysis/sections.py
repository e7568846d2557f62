"""What a report section gets and gives: the search's records, the output folder, and Markdown lines.

``search report`` writes the sections every search has and then asks the search's family for its own
(``Family.report``, a ``"module:function"`` taking a ``ReportContext``): no report code tests a family's
name. A section that cannot be drawn says so in the page and in ``ctx.skipped`` (listed at the end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

import records
from records.reader import Reader

Log = Callable[[str], None]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


@dataclass
class ReportContext:
    info: records.SearchInfo
    trials: pd.DataFrame  # records.trials, best first
    out: Path
    client: Reader | None  # what the records are read through (records.reader_for)
    log: Log = print
    top: int = 10
    best_model: bool = True  # sections that load the best weights (and the test split)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """The study's metric: what tables and plots show (never the penalized score of a constraint)."""
        return self.info.target

    @property
    def shown(self) -> str:
        """The trials column holding ``metric`` at each trial's best epoch."""
        return self.info.shown_column

    @property
    def infeasible(self) -> pd.Series:
        """Trials whose constraint did not hold at their best epoch (all False without a constraint)."""
        if records.FEASIBLE not in self.trials:
            return pd.Series(False, index=self.trials.index)
        return self.trials[records.FEASIBLE].eq(False).fillna(False).astype(bool)

    def fixed_or_column(self, name: str) -> pd.Series | None:
        """A searched parameter's column, or its fixed value broadcast to every trial, or None."""
        if name in self.trials:
            return self.trials[name]
        if name in self.info.fixed:
            raw = self.info.fixed[name]
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = raw
            return pd.Series([value] * len(self.trials), index=self.trials.index)
        return None

    def skip(self, section: str, why: str) -> list[str]:
        """Record a section that was not drawn, and the line the page shows in its place."""
        self.skipped.append((section, why))
        self.log(f"skipping {section}: {why}")
        return [f"*{section} skipped: {why}.*", ""]

    def image(self, file: str, alt: str) -> list[str]:
        return [f"![{alt}]({file})", ""]


__all__ = ["ReportContext", "slug", "Log"]
