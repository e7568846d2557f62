"""best.yaml: one model (spaces.exported.Exported) written by export and read by reproduce, whose
defaults are the study's own sections'."""

from __future__ import annotations

import pytest

from spaces.exported import Exported, exported_from, write_exported
from spaces.study import Budget, Reproduce, Resources, StudyError, load_exported

RECORD = {"search": "s-1", "study": "quick", "family": "optimization", "dataset": "digits",
          "objective": {"metric": "val_acc", "searched": "val_acc", "mode": "max", "value": 0.9, "trial": "t_1",
                        "epoch": 3},
          "config": {"dataset": "digits", "lr": 0.05, "epochs": 4}}


def test_a_study_without_resources_budget_or_reproduce_exports_the_study_defaults(tmp_path):
    exported = exported_from({**RECORD, "study_doc": {"name": "quick"}})
    assert exported.resources == Resources() and exported.reproduce == Reproduce()
    assert exported.max_failures == Budget().max_failures
    again = load_exported(write_exported(exported, tmp_path / "best.yaml"))
    assert again == exported


def test_the_study_sections_reach_best_yaml_and_reproduce_reads_them(tmp_path):
    study = {"resources": {"cpus": 2, "gpus": 0.5}, "budget": {"max_failures": 0, "num_samples": 3},
             "reproduce": {"seeds": [7], "epochs": 9}}
    exported = load_exported(write_exported(exported_from({**RECORD, "study_doc": study}), tmp_path / "b.yaml"))
    assert (exported.resources.cpus, exported.resources.gpus, exported.max_failures) == (2.0, 0.5, 0)
    assert exported.reproduce.seeds == [7]
    assert exported.config_at()["epochs"] == 9  # reproduce.epochs wins over the searched budget
    assert exported.config_at(epochs=2)["epochs"] == 2  # and --epochs over both
    assert exported_from({**RECORD, "study_doc": {}}).config_at()["epochs"] == 4  # else as searched


def test_a_minimal_file_gets_the_defaults_and_an_unknown_key_is_placed_at_its_line(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text("family: optimization\nconfig: {lr: 0.1}\n")
    exported = load_exported(path)
    assert isinstance(exported, Exported) and exported.reproduce.seeds == Reproduce().seeds
    path.write_text("family: optimization\nconfig: {lr: 0.1}\nreproduce: {seeds: [1]}\nseeds: [1, 2]\n")
    with pytest.raises(StudyError) as info:
        load_exported(path)
    assert info.value.problems == ["seeds (line 4): Extra inputs are not permitted"]
    path.write_text("family: optimization\nconfig:\n  lr: 0.1\n  momentum: 0.9\n  optimizer: adam\n")
    with pytest.raises(StudyError) as info:
        load_exported(path)
    assert info.value.problems[0].startswith("config.momentum (line 4): ")  # a pair placed at its key


@pytest.mark.parametrize("trial", ["16140e45", "1e5", "t_00001", "00012"])
def test_a_trial_id_that_looks_like_a_number_reads_back_as_written(tmp_path, trial):
    """Ray's hex trial ids can look like exponent floats (``16140e45``), which the study loader reads as
    numbers: the writer quotes what the loader would misread."""
    record = {**RECORD, "objective": {**RECORD["objective"], "trial": trial}, "study_doc": {}}
    again = load_exported(write_exported(exported_from(record), tmp_path / "best.yaml"))
    assert again.objective.trial == trial
