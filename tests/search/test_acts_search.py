"""Search settings act: the user's ``max_concurrent`` wins over the study's and over the trials that fit, and
the epochs-run tag of a trial records its last epoch, not its best one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

pytest.importorskip("ray")

from records.schema import EPOCHS_RUN, STATE, best_key  # noqa: E402
from records.states import TrialTracker  # noqa: E402
from search import runner, tuner  # noqa: E402
from search.callbacks import MlflowTrialLogger  # noqa: E402
from spaces.study import load_study  # noqa: E402

QUICK = Path(__file__).resolve().parents[2] / "spaces" / "quickstart.yaml"


@pytest.fixture
def study_with_max_concurrent_2(tmp_path):
    path = tmp_path / "quick.yaml"
    path.write_text(QUICK.read_text().replace("  reduction_factor: 2\n", "  reduction_factor: 2\n  max_concurrent: 2\n"))
    assert load_study(path).budget.max_concurrent == 2
    return path


@pytest.mark.parametrize("given, expected", [(None, 2), (1, 1)])
def test_the_users_max_concurrent_wins_over_the_studys(tmp_path, monkeypatch, study_with_max_concurrent_2, given,
                                                        expected):
    monkeypatch.setattr(runner, "init_ray", lambda address: None)
    monkeypatch.setattr(runner, "check_resources", lambda study, study_path=None: None)
    monkeypatch.setattr(runner, "build_tuner", lambda study, meta, callbacks: None)
    monkeypatch.setattr(runner, "_fit", lambda tuner, study, meta, runs, client: meta)
    meta = runner.start_search(study_with_max_concurrent_2, max_concurrent=given, tracking_uri=f"sqlite:///{tmp_path}/m.db",
                               runs_dir=tmp_path / "runs", name="mc", quiet=True)
    assert meta.max_concurrent == expected


@pytest.mark.parametrize("given, expected", [(None, 7), (1, 1), (3, 3)])
def test_the_tuner_runs_the_users_max_concurrent_else_the_trials_that_fit(tmp_path, monkeypatch, given, expected):
    seen = {}
    monkeypatch.setattr(tuner, "trials_that_fit", lambda cpus, gpus: 7)
    monkeypatch.setattr(tuner, "assemble_tuner", lambda **kw: seen.update(kw))
    study = load_study(QUICK)
    meta = tuner.SearchMeta("mc", str(QUICK), "sqlite:///x.db", "parent", "tpe", 4, given, str(tmp_path))
    tuner.build_tuner(study, meta, [])
    assert seen["max_concurrent"] == expected


def test_epochs_run_tag_is_the_last_epoch_not_the_best():
    tracker = TrialTracker("val_acc", "max", max_epochs=3)
    logger = MlflowTrialLogger("sqlite:///unused.db", "parent", "s", tracker)
    logger._client, logger.runs, logger.logged = mock.MagicMock(), {"t1": "rid"}, {}
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.1})
    for epoch, acc in ((1, 0.9), (2, 0.5), (3, 0.6)):  # best at epoch 1 of 3
        logger.on_trial_result(epoch, [], trial, {"epoch": epoch, "val_acc": acc})
    logger.on_trial_complete(3, [], trial)
    logger.flush()
    tags = {t.key: t.value for c in logger._client.log_batch.call_args_list for t in c.kwargs.get("tags") or ()}
    assert tags[EPOCHS_RUN] == "3" and tags[STATE] == "completed"
    best_epochs = [m.value for c in logger._client.log_batch.call_args_list for m in c.kwargs.get("metrics") or ()
                   if m.key == best_key("epoch")]
    assert best_epochs == [1.0, 1.0, 1.0]  # the best epoch is its own record

