"""A real search end to end: Ray Tune + Optuna + ASHA on digits, recorded in MLflow."""

from __future__ import annotations

import contextlib
import io
import textwrap

import pytest

pytest.importorskip("ray")

STUDY = textwrap.dedent("""\
    name: tiny
    family: optimization
    dataset: digits
    objective: {metric: val_acc, mode: max}
    budget: {num_samples: 6, max_epochs: 3, grace_period: 1, reduction_factor: 2}
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
    """``search run`` through the CLI, on a Ray started with one fake GPU (for the resource test)."""
    import ray

    from search.cli import main

    root = tmp_path_factory.mktemp("search")
    study = root / "tiny.yaml"
    study.write_text(STUDY)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", str(study), "--tracking-uri", uri, "--runs-dir", str(root / "runs"), "--name", "tiny-e2e",
                     "--quiet", "--top", "10"])
    assert code == 0
    yield out.getvalue(), uri, root
    ray.shutdown()


def test_search_records_every_trial_in_mlflow(finished_search):
    from records import schema, writer

    _, uri, _ = finished_search
    client = writer.client_for(uri)
    parent = schema.find_parent(client, "tiny-e2e")
    assert parent is not None and parent.data.tags[schema.STATE] == "finished"
    assert parent.data.tags["rs.family"] == "optimization"
    assert parent.data.tags["rs.git_commit"]
    assert parent.data.params["objective"] == "val_acc"
    children = schema.child_runs(client, parent)
    assert len(children) == 6
    stopped = 0
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["optimizer"] in ("sgd", "adam")
        assert ("momentum" in run.data.params) == (run.data.params["optimizer"] == "sgd")
        assert run.data.params["dataset"] == "digits" and run.data.params["epochs"] == "3"
        epochs = int(run.data.tags["rs.epochs_run"])
        # the exact state: ASHA is the only thing that ends a trial early here
        expected = "completed" if epochs == 3 else f"stopped early by ASHA at epoch {epochs}"
        assert run.data.tags[schema.STATE] == expected
        stopped += expected != "completed"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, epochs + 1))
        assert all(0.0 <= m.value <= 1.0 for m in history)
        assert "train_loss" in run.data.metrics and "samples_per_s" in run.data.metrics
        best_epoch = int(run.data.metrics["best_epoch"])
        values = {m.step: m.value for m in history}
        assert values[best_epoch] == run.data.metrics["best_val_acc"] == max(values.values())
    assert stopped >= 1  # 6 trials, reduction factor 2: ASHA stops some


def test_trials_run_side_by_side_on_the_cpus_they_fit(finished_search):
    """Two 1-CPU trials at once on 2 CPUs. Tune's own default with a searcher keeps one trial pending,
    which ran the trials of a search one after another (bench/vs_optuna.py found it)."""
    from records import schema, writer

    _, uri, _ = finished_search
    client = writer.client_for(uri)
    runs = schema.child_runs(client, schema.find_parent(client, "tiny-e2e"))
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    overlapping = sum(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    assert overlapping >= 2, spans


@pytest.mark.parametrize("cpus, gpus, fits", [(1, 0, 2), (0.5, 0, 4), (0.1, 0, 20), (1, 0.25, 2), (0.25, 0.5, 2),
                                              (0.25, 1, 1), (2, 0, 1)])
def test_max_concurrent_defaults_to_the_trials_that_fit(finished_search, cpus, gpus, fits):
    from search.cluster import trials_that_fit

    assert trials_that_fit(cpus, gpus) == fits  # the fixture's Ray: 2 CPUs, 1 GPU


def test_run_prints_the_table_show_prints(finished_search, capsys):
    from search.cli import main

    run_out, uri, _ = finished_search
    assert main(["show", "tiny-e2e", "--tracking-uri", uri, "--top", "10"]) == 0
    show_out, link = capsys.readouterr().out.split("MLflow: ")
    assert "top 6 of 6 trials of 'tiny-e2e'" in show_out and len(show_out.splitlines()) == 8
    assert show_out in run_out and run_out.endswith(link)  # the same reader, the same text, the same link
    assert main(["ls", "--tracking-uri", uri]) == 0
    ls_out = capsys.readouterr().out
    assert "tiny-e2e" in ls_out and "stopped" in ls_out.splitlines()[0]


def test_best_yaml_is_the_export_and_names_the_best_trial(finished_search, tmp_path):
    import yaml

    import records
    from search.cli import main
    from trainables.core import TrainConfig

    _, uri, root = finished_search
    table = records.trials("tiny-e2e", uri)
    best = records.best_row(table)
    written = (root / "runs" / "tiny-e2e" / "best.yaml").read_text()
    assert main(["export", "tiny-e2e", "--out", str(tmp_path / "best.yaml"), "--tracking-uri", uri]) == 0
    assert (tmp_path / "best.yaml").read_text() == written
    doc = yaml.safe_load(written)
    assert doc["objective"]["trial"] == best["trial"] and doc["objective"]["epoch"] == best["best_epoch"]
    assert doc["objective"]["value"] == pytest.approx(best["best_val_acc"]) and doc["objective"]["value"] > 0.3
    TrainConfig.from_dict(doc["config"])  # an exported config is a valid training config
    client = records.reader_for(uri)
    parent = records.find_parent(client, "tiny-e2e")
    assert parent.data.tags["rs.best_trial"] == best["trial"]
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best["best_val_acc"])
    assert main(["show", "no-such-search", "--tracking-uri", uri]) == 2


def test_best_model_is_the_best_epochs_model(finished_search, tmp_path):
    """Re-evaluating the logged weights on the validation split gives the reported best value."""
    import torch

    import records
    from trainables.core import evaluate, load_model
    from trainables.core.trainer import build_data

    _, uri, _ = finished_search
    client = records.reader_for(uri)
    info = records.search_info("tiny-e2e", uri, client)
    path = records.download_checkpoint(info, tmp_path, client)
    assert path is not None
    state = torch.load(path, weights_only=True)
    assert state.get("step", state["epoch"]) == info.best_epoch  # the reported epoch is the global step
    model, cfg = load_model(path)
    _, acc = evaluate(model, build_data(cfg, torch.device("cpu")).val)
    assert acc == pytest.approx(info.best_value, abs=1e-6)
    child = next(r for r in records.child_runs(client, client.get_run(info.run_id))
                 if r.data.tags["rs.trial_id"] == info.best_trial)
    assert client.list_artifacts(child.info.run_id, "best_model") == ["best_model/checkpoint.pt"]


def test_existing_name_is_refused(finished_search):
    from search.errors import SearchError
    from search.runner import start_search

    _, uri, root = finished_search
    with pytest.raises(SearchError, match="already exists"):
        start_search(root / "tiny.yaml", tracking_uri=uri, runs_dir=root / "runs", name="tiny-e2e", quiet=True)


def test_reproduce_uses_the_studys_resources_and_objective(finished_search, tmp_path):
    """The exported study's GPU fraction is what each seed's trial reserves (one fake GPU in this Ray)."""
    import yaml

    import records
    from records import schema, writer
    from search.reproduce import reproduce
    from spaces.sections import dump_yaml

    _, uri, root = finished_search
    doc = yaml.safe_load((root / "runs" / "tiny-e2e" / "best.yaml").read_text())
    doc["resources"]["gpus"] = 0.25
    doc["objective"]["metric"] = "val_loss"  # an objective other than val_acc must be the one summarized
    doc["objective"]["mode"] = "min"
    (tmp_path / "best.yaml").write_text(dump_yaml(doc))  # the writer's number rule: an id like 16140e45 stays text
    per_seed, summary = reproduce(tmp_path / "best.yaml", seeds=[0, 1], epochs=1, tracking_uri=uri,
                                  runs_dir=root / "runs", quiet=True)
    assert sorted(per_seed["seed"]) == [0, 1]
    assert summary.index[0] == "val_loss" and {"test_acc", "test_loss"} <= set(summary.index)
    assert all(m.startswith("test_") for m in summary.index[1:])  # the objective, then the test metrics
    assert per_seed["test_acc"].notna().all() and (per_seed["test_acc"] > 0.1).all()
    assert summary.loc["test_acc", "mean"] == pytest.approx(per_seed["test_acc"].mean())
    client = writer.client_for(uri)
    runs = schema.reproductions(client, "tiny-e2e")
    assert len(runs) == 1 and runs[0].data.metrics["val_loss_mean"] == pytest.approx(per_seed["val_loss"].mean())
    children = schema.child_runs(client, runs[0])
    assert len(children) == 2
    assert {c.data.tags[schema.RESOURCES] for c in children} == {"cpu=1,gpu=0.25"}
    assert all(c.data.tags[schema.STATE] == "completed" for c in children)
    summary_table = records.reproductions("tiny-e2e", uri)
    assert summary_table.iloc[0]["objective"] == "val_loss" and "±" in summary_table.iloc[0]["test_acc"]


@pytest.mark.slow
def test_reproduce_says_nothing_when_all_is_well(finished_search):
    """`search reproduce` as a command: Tune found no result.json to read back (its own loggers are off) and
    printed "Failed to fetch metrics for N trial(s): FileNotFoundError ..." though every seed had finished."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, uri, root = finished_search
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "RAY_ADDRESS": "local"}
    out = subprocess.run([sys.executable, "-m", "search", "reproduce", str(root / "runs" / "tiny-e2e" / "best.yaml"),
                          "--seeds", "0", "1", "--epochs", "1", "--quiet", "--tracking-uri", uri, "--runs-dir",
                          str(root / "runs")], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Failed to fetch metrics" not in out.stderr and "test_acc:" in out.stdout, out.stderr
