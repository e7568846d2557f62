"""A real search end to end: Ray Tune + Optuna + ASHA on digits, recorded in MLflow."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("ray")

STUDY = textwrap.dedent("""\
    name: tiny
    family: optimization
    dataset: digits
    objective: {metric: val_acc, mode: max}
    budget: {num_samples: 4, max_epochs: 2, grace_period: 1, reduction_factor: 2}
    resources: {cpus: 1, gpus: 0}
    fixed: {model: cnn, filters: [8, 16], batch_size: 128, scheduler: none}
    search:
      optimizer: {type: choice, values: [sgd, adam]}
      lr: {type: loguniform, low: 1.0e-3, high: 0.1}
      momentum: {type: uniform, low: 0.5, high: 0.9, when: {optimizer: sgd}}
    seed: 3
""")


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    import ray

    from search.runner import start_search

    root = tmp_path_factory.mktemp("search")
    study = root / "tiny.yaml"
    study.write_text(STUDY)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    outcome = start_search(study, tracking_uri=uri, runs_dir=root / "runs", name="tiny-e2e", quiet=True)
    yield outcome, uri, root
    ray.shutdown()


def test_search_records_every_trial_in_mlflow(finished_search):
    from search import tracking

    outcome, uri, _ = finished_search
    client = tracking.client_for(uri)
    parent = tracking.find_parent(client, "tiny-e2e")
    assert parent is not None and parent.data.tags[tracking.STATE] == "finished"
    assert parent.data.tags["rs.family"] == "optimization"
    assert parent.data.tags["rs.git_commit"]
    assert parent.data.params["objective"] == "val_acc"
    children = tracking.child_runs(client, parent)
    assert len(children) == 4
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["optimizer"] in ("sgd", "adam")
        assert ("momentum" in run.data.params) == (run.data.params["optimizer"] == "sgd")
        assert run.data.params["dataset"] == "digits" and run.data.params["epochs"] == "2"
        state = run.data.tags[tracking.STATE]
        assert state == "completed" or state.startswith("stopped early")
        history = client.get_metric_history(run.info.run_id, "val_acc")
        epochs = int(run.data.tags["rs.epochs_run"])
        assert [m.step for m in history] == list(range(1, epochs + 1))
        assert all(0.0 <= m.value <= 1.0 for m in history)
        assert "train_loss" in run.data.metrics and "samples_per_s" in run.data.metrics


def test_search_outcome_table_and_best_yaml(finished_search):
    import yaml

    outcome, _, _ = finished_search
    assert len(outcome.table) == 4
    assert outcome.table["val_acc"].is_monotonic_decreasing
    assert outcome.best_value == pytest.approx(outcome.table["val_acc"].iloc[0])
    assert outcome.best_value > 0.3  # two epochs of a tiny CNN: well above chance (0.1)
    best = yaml.safe_load(outcome.best_yaml.read_text())
    assert best["config"]["optimizer"] in ("sgd", "adam") and best["config"]["filters"] == [8, 16]


def test_show_and_export_read_back_from_mlflow(finished_search, tmp_path, capsys):
    import yaml

    from search.cli import main
    from trainables.core import TrainConfig

    _, uri, _ = finished_search
    assert main(["show", "tiny-e2e", "--tracking-uri", uri]) == 0
    assert "tiny-e2e" in capsys.readouterr().out
    assert main(["ls", "--tracking-uri", uri]) == 0
    assert "tiny-e2e" in capsys.readouterr().out
    out = tmp_path / "best.yaml"
    assert main(["export", "tiny-e2e", "--out", str(out), "--tracking-uri", uri]) == 0
    doc = yaml.safe_load(out.read_text())
    TrainConfig.from_dict(doc["config"])  # an exported config is a valid training config
    assert doc["objective"]["metric"] == "val_acc"
    assert main(["show", "no-such-search", "--tracking-uri", uri]) == 2


def test_best_weights_are_logged(finished_search):
    from search import tracking

    _, uri, _ = finished_search
    client = tracking.client_for(uri)
    parent = tracking.find_parent(client, "tiny-e2e")
    paths = [a.path for a in client.list_artifacts(parent.info.run_id, "best_model")]
    assert paths == ["best_model/checkpoint.pt"]


def test_existing_name_is_refused(finished_search):
    from search.runner import SearchError, start_search

    outcome, uri, root = finished_search
    with pytest.raises(SearchError, match="already exists"):
        start_search(root / "tiny.yaml", tracking_uri=uri, runs_dir=root / "runs", name="tiny-e2e", quiet=True)


def test_reproduce_runs_the_exported_config_on_each_seed(finished_search, tmp_path):
    from search import tracking
    from search.queries import export_best
    from search.reproduce import reproduce

    _, uri, root = finished_search
    best = export_best("tiny-e2e", tmp_path / "best.yaml", uri)
    per_seed, summary = reproduce(best, seeds=[0, 1], epochs=1, tracking_uri=uri, runs_dir=root / "runs")
    assert sorted(per_seed["seed"]) == [0, 1]
    assert per_seed["test_acc"].notna().all() and (per_seed["val_acc"] > 0.1).all()
    assert summary.loc["val_acc", "mean"] == pytest.approx(per_seed["val_acc"].mean())
    client = tracking.client_for(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`{tracking.ROLE}` = 'reproduce'")
    assert len(runs) == 1 and "val_acc_mean" in runs[0].data.metrics
    assert len(tracking.child_runs(client, runs[0])) == 2
