"""``search suite report NAME``: the seed's claims beside our numbers, with a verdict per claim.

Each claim of a suite (``spaces/suite.py``) is answered from the trials of the suite's search of its study
(``<suite>-<study>``): the mean of the claim's metric, at the last epoch every scored trial reached, over the
scored trials matching each side (a trial
matches a side when every named parameter, searched or fixed, has that value or lies in that range). Verdicts:
``holds`` / ``does not hold`` (the direction, or the closeness, the seed claims), ``not comparable (why)`` when a
side has no completed trial or the search has not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import records
from spaces.suite import Claim, Suite, search_name

from . import tables

HOLDS, FAILS, NOT_COMPARABLE = "holds", "does not hold", "not comparable"


def _column(trials: pd.DataFrame, info: records.SearchInfo, name: str) -> pd.Series:
    if name in trials:
        return trials[name]
    raw = info.fixed.get(name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = raw
    return pd.Series([value] * len(trials), index=trials.index, dtype=object)


def matching(trials: pd.DataFrame, info: records.SearchInfo, where: dict) -> pd.Series:
    """Scored trials whose parameters match ``where`` (a value, or ``{min: x}`` / ``{max: x}``, max exclusive)."""
    mask = trials["outcome"].isin(records.RANKABLE)
    for key, want in where.items():
        col = _column(trials, info, key)
        if isinstance(want, dict):
            num = pd.to_numeric(col, errors="coerce")
            mask &= num.notna()
            if "min" in want:
                mask &= num >= want["min"]
            if "max" in want:
                mask &= num < want["max"]
        else:
            mask &= col.map(lambda v, w=want: v == w or (str(v) == str(w)))
    return mask


@dataclass
class Answer:
    claim: Claim
    a: float | None
    b: float | None
    n_a: int
    n_b: int
    verdict: str
    why: str = ""


def answer(claim: Claim, trials: pd.DataFrame | None, info: records.SearchInfo | None,
           values: pd.Series | None = None) -> Answer:
    """The claim's two means and verdict; ``values``: each trial's metric at the epoch compared (default: the
    trials table's column, the last epoch each trial ran)."""
    if trials is None or info is None:
        return Answer(claim, None, None, 0, 0, NOT_COMPARABLE, f"search of {claim.study} not run")
    if values is None and claim.metric not in trials:
        return Answer(claim, None, None, 0, 0, NOT_COMPARABLE, f"no trial reported {claim.metric}")
    values = pd.to_numeric(trials[claim.metric] if values is None else values, errors="coerce")
    sa, sb = matching(trials, info, claim.a) & values.notna(), matching(trials, info, claim.b) & values.notna()
    n_a, n_b = int(sa.sum()), int(sb.sum())
    if not n_a or not n_b:
        side = claim.a_label if not n_a else claim.b_label
        return Answer(claim, None, None, n_a, n_b, NOT_COMPARABLE, f"no scored trial for {side}")
    a, b = float(values[sa].mean()), float(values[sb].mean())
    if not claim.seed.measured:
        return Answer(claim, a, b, n_a, n_b, NOT_COMPARABLE, "the seed's numbers were not measured on real data; "
                      "ours are the table on real data")
    if claim.kind == "close":
        ok = abs(a - b) <= claim.tolerance
        why = f"|{a:.4f} - {b:.4f}| {'<=' if ok else '>'} {claim.tolerance}"
    else:
        ok = a > b if claim.expect == ">" else a < b
        why = f"{a:.4f} {'>' if a > b else '<=' if a <= b else '?'} {b:.4f}"
    return Answer(claim, a, b, n_a, n_b, HOLDS if ok else FAILS, why)


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def build(suite: Suite, uri: str | None = None, out: str | Path | None = None, log=print) -> Path:
    """Write the suite's report (Markdown) into ``out`` (default ``docs/replications``); returns its path."""
    out = Path(out) if out is not None else Path("docs") / "replications"
    out.mkdir(parents=True, exist_ok=True)
    client = records.reader_for(uri)
    found: dict[str, tuple[pd.DataFrame, records.SearchInfo] | None] = {}
    searches = []
    for study in suite.studies:
        name = search_name(suite, study)
        try:
            info = records.search_info(name, uri, client)
            found[study] = (records.trials(name, uri, info=info, client=client), info)
            searches.append((study, name, info.dataset, info.state, len(found[study][0])))
        except records.SearchNotFound:
            found[study] = None
            searches.append((study, name, "", "not run", 0))
        log(f"{study}: {searches[-1][3]}")
    answers, epochs = [], {}
    for c in suite.claims:
        if found[c.study] is None:
            answers.append(answer(c, None, None))
            continue
        trials, info = found[c.study]
        history = records.histories(info.name, uri, metrics=(c.metric,), info=info, client=client)
        common, at_common = records.at_common_epoch(trials, history, c.metric)
        like_with_like = common is not None and at_common.notna().any()
        epochs[c.id] = common if like_with_like else "last"
        answers.append(answer(c, trials, info, at_common if like_with_like else None))
    rows = []
    for ans in answers:
        c, ours_dataset = ans.claim, (found[ans.claim.study][1].dataset if found[ans.claim.study] else "")
        seed_num = "figure (read by eye)" if c.seed.value is None and c.seed.a is None else \
            f"{c.seed.a if c.seed.a is not None else c.seed.value} vs {c.seed.b if c.seed.b is not None else ''}"
        rows.append({"claim": c.id, "ref": c.ref, "seed says": c.seed.text, "seed": seed_num,
                     "seed data": f"{c.seed.dataset}; {c.seed.scale}",
                     "ours": f"{c.a_label}: {_fmt(ans.a) or '-'} (n={ans.n_a}) vs {c.b_label}: {_fmt(ans.b) or '-'} "
                             f"(n={ans.n_b})",
                     "our data": f"{ours_dataset}; study {c.study}, `{c.metric}` at epoch {epochs.get(c.id, '-')}",
                     "verdict": ans.verdict + (f" ({ans.why})" if ans.why else "")})
    md = [f"# Replication of seed {suite.seed_file}: {suite.title}", "", suite.note, "",
          "Generated by `search suite report " + suite.name + "` from the MLflow records of the suite's searches "
          "(`search suite run " + suite.name + "`). Our number is the mean of the claim's metric over the scored "
          "trials of each side at the last epoch every scored trial reached (like with like under early stopping; "
          "the final epoch without it); the verdict compares them as the seed's claim does.", "",
          "## Searches", "",
          *tables.to_markdown(pd.DataFrame(searches, columns=["study", "search", "dataset", "state",
                                                              "trials"])).splitlines(), "",
          "## Claims", "", *tables.to_markdown(pd.DataFrame(rows)).splitlines(), ""]
    counts = pd.Series([a.verdict for a in answers]).value_counts()
    md += ["Verdicts: " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ".", ""]
    path = out / f"{suite.name}.md"
    path.write_text("\n".join(md))
    return path


__all__ = ["build", "answer", "matching", "search_name", "HOLDS", "FAILS", "NOT_COMPARABLE"]
