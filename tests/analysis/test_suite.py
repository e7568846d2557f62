"""Suites: the seed's claims as data (validated with key paths and lines) and the verdict per claim."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from analysis.suite import FAILS, HOLDS, NOT_COMPARABLE, answer, matching
from search.cli import main
from spaces.study import StudyError
from spaces.suite import list_suites, load_suite


def test_shipped_suites_validate():
    assert "seed_002" in list_suites()
    for name in list_suites():
        suite = load_suite(name)
        assert suite.claims and all(c.study in suite.studies for c in suite.claims)


@pytest.mark.parametrize("edit,says", [
    (("studies: [digits_regnet_mu, fmnist_regnet_fgsm]", "studies: [digits_regnet_mu, no_such_study]"),
     "studies.1 (line"),
    (("    a: {head: gaussian, mu_t: {min: 10}}", "    a: {head: gaussian, muu_t: {min: 10}}"),
     "claims.0.a.muu_t"),
    (("    metric: val_acc\n", "    metric: val_accc\n"), "never reports 'val_accc'"),
    (("    kind: compare\n", "    kind: bigger\n"), "claims.0.kind (line"),
])
def test_a_bad_suite_names_the_key_and_line(tmp_path, edit, says):
    from spaces.suite import suite_path

    text = suite_path("seed_002").read_text()
    assert edit[0] in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(StudyError) as info:
        load_suite(bad)
    assert says in str(info.value)


def test_unknown_suite_exits_2(capsys):
    assert main(["suite", "report", "no_such_suite"]) == 2
    err = capsys.readouterr().err
    assert "no suite named 'no_such_suite'; suites: seed_000_001, seed_002, seed_003, seed_004" in err


def _claim(**kw):
    base = dict(id="c", ref="Fig. 1", study="s", kind="compare", metric="val_acc", a={"head": "gaussian",
                "mu_t": {"min": 10}}, a_label="A", b={"head": "gaussian", "mu_t": {"max": 10}}, b_label="B",
                seed={"text": "t", "dataset": "MNIST", "scale": "ResNet"})
    from spaces.suite import Claim

    return Claim.model_validate({**base, **kw})


TRIALS = pd.DataFrame({
    "trial": list("abcdef"), "head": ["gaussian"] * 4 + ["linear"] * 2, "mu_t": [5.0, 10.0, 70.0, 9.99, None, None],
    "outcome": ["completed"] * 5 + ["failed"], "val_acc": [0.5, 0.9, 0.8, 0.6, 0.86, 0.99]})
INFO = SimpleNamespace(fixed={"regnet_loss": "covariance"})


def test_ranges_are_min_inclusive_max_exclusive_and_only_scored_trials_count():
    assert list(TRIALS["trial"][matching(TRIALS, INFO, {"mu_t": {"min": 10}})]) == ["b", "c"]
    assert list(TRIALS["trial"][matching(TRIALS, INFO, {"mu_t": {"max": 10}})]) == ["a", "d"]
    assert list(TRIALS["trial"][matching(TRIALS, INFO, {"head": "linear"})]) == ["e"]  # f failed
    assert matching(TRIALS, INFO, {"regnet_loss": "covariance"}).sum() == 5  # a fixed value matches every trial


def test_verdicts():
    holds = answer(_claim(), TRIALS, INFO)
    assert (holds.verdict, holds.a, holds.b, holds.n_a, holds.n_b) == (HOLDS, pytest.approx(0.85), 0.55, 2, 2)
    assert answer(_claim(expect="<"), TRIALS, INFO).verdict == FAILS
    close = _claim(kind="close", b={"head": "linear"}, tolerance=0.02)
    assert answer(close, TRIALS, INFO).verdict == HOLDS  # |0.85 - 0.86| <= 0.02
    assert answer(_claim(kind="close", b={"head": "linear"}, tolerance=0.005), TRIALS, INFO).verdict == FAILS
    empty = answer(_claim(b={"head": "linear", "mu_t": {"min": 1}}), TRIALS, INFO)
    assert empty.verdict == NOT_COMPARABLE and "no scored trial for B" in empty.why
    at_epoch = answer(_claim(), TRIALS, INFO, values=pd.Series([0.9, 0.1, 0.2, 0.8, 0.5, 0.5]))
    assert at_epoch.verdict == FAILS and at_epoch.a == pytest.approx(0.15)  # the values given, not the column
    assert answer(_claim(), None, None).verdict == NOT_COMPARABLE
    fake = answer(_claim(seed={"text": "12.11 %", "value": 0.1211, "dataset": "FakeData", "scale": "1 epoch",
                               "measured": False}), TRIALS, INFO)
    assert fake.verdict == NOT_COMPARABLE and "not measured on real data" in fake.why and fake.a == pytest.approx(0.85)


def test_suite_run_skips_finished_searches_resumes_unfinished_and_starts_the_rest(monkeypatch):
    import records
    import search.suite as suite_run

    states = {"seed_002-digits_regnet_mu": "finished", "seed_002-fmnist_regnet_fgsm": "interrupted"}

    def info(name, uri=None, client=None):
        if name not in states:
            raise records.SearchNotFound(name)
        return SimpleNamespace(state=states[name])

    calls = []
    monkeypatch.setattr(suite_run.records, "search_info", info)
    monkeypatch.setattr(suite_run, "start_search", lambda path, **kw: calls.append(("start", kw["name"])))
    monkeypatch.setattr(suite_run, "resume_search", lambda name, **kw: calls.append(("resume", name)))
    assert suite_run.run_suite("seed_002", log=lambda m: None) == ["seed_002-digits_regnet_mu",
                                                                   "seed_002-fmnist_regnet_fgsm"]
    assert calls == [("resume", "seed_002-fmnist_regnet_fgsm")]
    del states["seed_002-fmnist_regnet_fgsm"]
    calls.clear()
    suite_run.run_suite("seed_002", log=lambda m: None)
    assert calls == [("start", "seed_002-fmnist_regnet_fgsm")]
