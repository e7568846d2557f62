"""`search run study.yaml budget.max_epochs=2 fixed.lr=0.01 search.lr.high=0.1`: validated like the file."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from search.errors import SearchError
from search.overrides import as_text, frozen_text, parse_overrides
from spaces.study import StudyError, load_study

STUDY = textwrap.dedent("""\
    name: ov
    family: optimization
    dataset: digits
    budget: {num_samples: 4, max_epochs: 3, scheduler: none}
    resources: {cpus: 1, gpus: 0}
    fixed: {model: cnn, filters: [8, 16], batch_size: 64, optimizer: adam}
    search:
      lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}
""")


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY)
    return path


def test_values_are_read_as_yaml():
    assert parse_overrides(["budget.max_epochs=2", "fixed.weight_decay=5e-4", "fixed.filters=[4, 8]",
                            "fixed.optimizer=sgd", "budget.time_budget_s="]) == {
        "budget.max_epochs": 2, "fixed.weight_decay": 5e-4, "fixed.filters": [4, 8], "fixed.optimizer": "sgd",
        "budget.time_budget_s": None}


@pytest.mark.parametrize("item, message", [
    ("budget.max_epochs", "write KEY.PATH=VALUE"),
    ("=2", "write KEY.PATH=VALUE"),
    ("budget..max_epochs=2", "write KEY.PATH=VALUE"),
    ("fixed.filters=[8, 16", r"override fixed.filters: .*line 1"),
])
def test_malformed_overrides_are_one_line(item, message):
    with pytest.raises(SearchError, match=message) as info:
        parse_overrides([item])
    assert "\n" not in str(info.value)


def test_an_override_given_twice_is_refused():
    with pytest.raises(SearchError, match="override budget.max_epochs: given twice"):
        parse_overrides(["budget.max_epochs=2", "budget.max_epochs=3"])


def test_overrides_act_at_any_depth(study_file):
    study = load_study(study_file, overrides=parse_overrides(
        ["budget.max_epochs=2", "fixed.weight_decay=0.01", "search.lr.high=0.1", "fixed.filters=[4, 8]"]))
    assert study.budget.max_epochs == 2 and study.budget.num_samples == 4  # the rest of the section is kept
    assert study.fixed["weight_decay"] == 0.01 and study.fixed["filters"] == [4, 8] and study.fixed["model"] == "cnn"
    assert study.search["lr"].high == 0.1 and study.search["lr"].low == 1e-3


@pytest.mark.parametrize("items, expected", [
    (["budget.max_epochs=0"], "budget.max_epochs (command line): Input should be greater than 0"),
    (["budget.max_epoch=2"], "budget.max_epoch (command line): unknown key (did you mean 'max_epochs'?)"),
    (["search.lr.high=abc"], "search.lr.high (command line): Input should be a valid number"),
    (["search.wd.high=0.1"], "search.wd (command line): required key 'type' is missing"),
    (["fixed.lr=0.01"], "search.lr (line 8): is both fixed and searched"),  # as in the file
    (["budget.max_epochs.x=2"], "budget.max_epochs (command line): is 3, not a mapping; budget.max_epochs.x cannot be set"),
])
def test_a_bad_override_is_the_files_error_at_its_key_path(study_file, items, expected):
    with pytest.raises(StudyError) as info:
        load_study(study_file, overrides=parse_overrides(items))
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_a_file_problem_keeps_its_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(STUDY.replace("max_epochs: 3", "max_epochs: -1"))
    with pytest.raises(StudyError) as info:
        load_study(path, overrides={"budget.num_samples": 2})
    assert info.value.problems == ["budget.max_epochs (line 4): Input should be greater than 0"]


def test_the_frozen_study_is_the_file_with_the_overrides_applied(study_file):
    overrides = parse_overrides(["budget.max_epochs=2", "search.lr.high=0.1"])
    text = frozen_text(study_file, overrides)
    assert text.startswith("# s.yaml with the command-line overrides budget.max_epochs=2 search.lr.high=0.1\n")
    doc = yaml.safe_load(text)
    assert doc["budget"] == {"num_samples": 4, "max_epochs": 2, "scheduler": "none"}
    assert doc["search"]["lr"] == {"type": "loguniform", "low": 1e-3, "high": 0.1}
    assert frozen_text(study_file, {}) == STUDY  # no overrides: the file itself, comments and all
    lines = {"description": "two\nlines"}
    assert yaml.safe_load(frozen_text(study_file, lines))["description"] == "two\nlines"  # the header stays a comment
    assert as_text({"fixed.filters": [4, 8], "fixed.optimizer": "sgd"}) == "fixed.filters=[4, 8] fixed.optimizer=sgd"


def test_run_with_a_bad_override_exits_2_and_writes_nothing(study_file, tmp_path, capsys, monkeypatch):
    from search.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["run", str(study_file), "budget.max_epochs=two", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2 and "budget.max_epochs (command line): Input should be a valid integer" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
    assert main(["run", str(study_file), "max_epochs"]) == 2
    assert "override 'max_epochs': write KEY.PATH=VALUE" in capsys.readouterr().err


def test_overrides_may_follow_the_options():
    from search.cli import UsageError, build_parser, parse_args

    args = parse_args(build_parser(), ["run", "s.yaml", "budget.num_samples=3", "--name", "x", "fixed.lr=0.1"])
    assert args.overrides == ["budget.num_samples=3", "fixed.lr=0.1"] and args.name == "x"
    with pytest.raises(UsageError, match="unrecognized arguments: --bogus"):
        parse_args(build_parser(), ["run", "s.yaml", "--bogus"])
    with pytest.raises(UsageError, match="unrecognized arguments: extra"):
        parse_args(build_parser(), ["ls", "extra"])
