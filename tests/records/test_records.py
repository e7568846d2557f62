"""The record layer: import graph, trial states, the best-trial rule, best.yaml, resume without duplicates.

The MLflow records are written by the real writers (``records.writer.start_parent`` and the Tune
callback ``search.callbacks.MlflowTrialLogger``) fed with fake trials, so no Ray cluster starts.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import records
from records import schema, writer
from records.states import TrialTracker, decide
from spaces.exported import exported_from, write_exported

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ the import graph
def _imports(path: Path, whole: bool = False) -> list[tuple[str, bool]]:
    """(top-level package, or the whole dotted name with ``whole``; imported at module level?) for every import."""
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name if whole else a.name.split(".")[0], id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module if whole else node.module.split(".")[0], id(node) in top_level))
    return out


def _package_imports(package: str) -> dict[str, list[tuple[str, bool]]]:
    return {str(p.relative_to(ROOT)): _imports(p) for p in sorted((ROOT / package).rglob("*.py"))}


def test_layers_import_only_downwards():
    bad = []
    for file, imports in _package_imports("search").items():
        for mod, at_top in imports:
            # The CLI is the one place where the two meet: `search report` imports analysis when it runs.
            if mod == "analysis" and (file != "search/cli.py" or at_top):
                bad.append(f"{file} imports analysis")
    for file, imports in _package_imports("analysis").items():
        bad += [f"{file} imports {m}" for m, _ in imports if m in ("search", "ray")]
    # records reads the metric vocabulary (torch-free, the bottom of the house) and nothing else of trainables
    for file in _package_imports("records"):
        for m, _ in _imports(ROOT / file, whole=True):
            if m.split(".")[0] in ("search", "analysis", "ray", "spaces") or (
                    m.startswith("trainables") and m != "trainables.core.metric_names"):
                bad.append(f"{file} imports {m}")
    for file, imports in _package_imports("trainables/core").items():
        bad += [f"{file} imports {m}" for m, _ in imports if m in ("ray", "mlflow", "search", "analysis", "records")]
    assert not bad, bad


def test_importing_a_layer_loads_nothing_above_it():
    script = textwrap.dedent("""\
        import sys
        import records, analysis.report, analysis.tables
        assert not any(m == 'search' or m.startswith('search.') for m in sys.modules), 'analysis loaded search'
        assert 'ray' not in sys.modules, 'analysis loaded ray'
        import search.queries, search.runner, search.cli
        assert 'analysis.report' in sys.modules  # loaded above; now check search alone in a clean process
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    alone = "import sys, search.queries, search.runner, search.cli; print(sorted({m.split('.')[0] for m in sys.modules}))"
    proc = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout
    assert "'records'" in loaded and "'analysis'" not in loaded and "'ray'" not in loaded


# ------------------------------------------------------------------ trial states
def test_state_rule():
    assert str(decide(epochs=4, max_epochs=4)) == "completed"
    assert str(decide(epochs=4, max_epochs=4, stopped_by_scheduler=True)) == "completed"  # ASHA stops at max_t too
    assert str(decide(epochs=2, max_epochs=4, stopped_by_scheduler=True)) == "stopped early by ASHA at epoch 2"
    assert str(decide(epochs=2, max_epochs=4)) == "ended by the time budget at epoch 2"
    assert str(decide(epochs=3, max_epochs=4, diverged_at=3)) == "diverged at epoch 3: non-finite training loss"
    assert str(decide(epochs=1, max_epochs=4, error="Traceback...\nRuntimeError: boom\n")) == "failed: RuntimeError: boom"
    for tag, kind in [("completed", "completed"), ("stopped early by ASHA at epoch 2", "stopped"),
                      ("ended by the time budget at epoch 2", "ended"), ("diverged at epoch 3: x", "diverged"),
                      ("failed: boom", "failed"), ("running", "running")]:
        assert records.outcome(tag) == kind


def test_tracker_best_epoch_takes_the_latest_of_equal_values_and_never_nan():
    t = TrialTracker("val_acc", "max", 5, companions=("val_loss",))
    for epoch, acc in enumerate([0.5, 0.9, 0.8, 0.9, float("nan")], start=1):
        t.result("a", {"epoch": epoch, "val_acc": acc, "val_loss": 1 - epoch / 10})
    a = t.get("a")
    assert (a.best, a.best_epoch, a.at_best) == (0.9, 4, {"val_loss": pytest.approx(0.6)})
    low = TrialTracker("val_loss", "min", 3)
    for epoch, loss in enumerate([0.5, 0.3, 0.4], start=1):
        low.result("b", {"epoch": epoch, "val_loss": loss})
    assert (low.get("b").best, low.get("b").best_epoch) == (0.3, 2)


# ------------------------------------------------------------------ a store written by the real writers
STUDY = textwrap.dedent("""\
    name: rec
    family: optimization
    dataset: digits
    objective: {metric: val_acc, mode: max}
    budget: {num_samples: 6, max_epochs: 3, grace_period: 1, reduction_factor: 2, max_failures: 1}
    resources: {cpus: 2, gpus: 0.5}
    fixed: {model: cnn, filters: [8, 16]}
    search:
      lr: {type: loguniform, low: 1.0e-3, high: 0.1}
    reproduce: {seeds: [4, 5], epochs: 7}
""")


def _trial(tid: str, lr: float, error_file: Path | None = None):
    config = {"dataset": "digits", "model": "cnn", "filters": [8, 16], "epochs": 3, "seed": 0, "lr": lr,
              "rs_objective": {"dropped": True}}
    pgf = SimpleNamespace(required_resources={"CPU": 2.0, "GPU": 0.5})
    return SimpleNamespace(trial_id=tid, config=config, error_file=str(error_file) if error_file else None,
                           placement_group_factory=pgf)


def _logger(uri, parent):
    from search.callbacks import MlflowTrialLogger

    logger = MlflowTrialLogger(uri, parent, "rec-1", TrialTracker("val_acc", "max", 3))
    logger.setup()
    return logger


# trial -> per-epoch val_acc, then how it ends: "done" (the scheduler's stop on the last result),
# "end" (complete without a stop decision), "error", or an epoch at which it diverges
TRIALS = {
    "t_00001": ([0.5, 1.0, 1.0], "end"),  # 1.0 first reached at epoch 2 (its best epoch: 3, the latest)
    "t_00002": ([1.0, 0.9], "done"),  # 1.0 at epoch 1: reached it sooner -> the best trial
    "t_00003": ([1.0, 0.7], "done"),  # ties t_00002 on value and epoch: the larger id loses
    "t_00004": ([1.0, float("nan")], 2),  # diverged: its epoch-1 score does not count
    "t_00005": ([0.6], "end"),  # ended by the time budget
    "t_00006": ([0.99], "error"),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from spaces.study import load_study

    pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("records")
    (tmp / "rec.yaml").write_text(STUDY)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = writer.client_for(uri)
    parent = writer.start_parent(client, load_study(tmp / "rec.yaml"), "rec-1", tmp / "rec.yaml", sampler="tpe")
    logger = _logger(uri, parent)
    (tmp / "error.txt").write_text("Traceback (most recent call last):\nRuntimeError: boom\n")
    snapshot = None
    for i, (tid, (curve, end)) in enumerate(TRIALS.items()):
        trial = _trial(tid, 0.01 * (i + 1), tmp / "error.txt" if end == "error" else None)
        if i == 3:  # what Tune saved with the experiment state before the later trials started
            snapshot = pickle.dumps(logger)
        logger.on_trial_start(0, [], trial)
        for epoch, acc in enumerate(curve, start=1):
            result = {"epoch": epoch, "training_iteration": epoch, "val_acc": acc, "train_loss": 0.1,
                      "done": end == "done" and epoch == len(curve)}
            if end == epoch:
                result["diverged"] = 1.0
            logger.on_trial_result(0, [], trial, result)
        if end == "error":
            logger.on_trial_error(0, [], trial)
        else:
            logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end(trials=[])  # Tune's last call: the queued writes are in the store
    return uri, tmp, snapshot


def test_every_state_is_tagged_exactly(store):
    uri, _, _ = store
    df = records.trials("rec-1", uri)
    states = dict(zip(df["trial"], df["state"]))
    assert states == {
        "t_00001": "completed",
        "t_00002": "stopped early by ASHA at epoch 2",
        "t_00003": "stopped early by ASHA at epoch 2",
        "t_00004": "diverged at epoch 2: non-finite training loss",
        "t_00005": "ended by the time budget at epoch 1",
        "t_00006": "failed: RuntimeError: boom",
    }
    client = writer.client_for(uri)
    run = client.get_run(df.loc[df.trial == "t_00001", "run_id"].item())
    assert run.data.tags[schema.RESOURCES] == "cpu=2,gpu=0.5"
    assert "rs_objective" not in run.data.params  # search-layer keys are not training parameters


def test_one_best_trial_under_ties(store, tmp_path, capsys):
    from search.cli import main

    uri, _, _ = store
    df = records.trials("rec-1", uri)
    assert list(df["trial"]) == ["t_00002", "t_00003", "t_00001", "t_00005", "t_00004", "t_00006"]
    assert list(df["best_epoch"].astype(float).fillna(0)) == [1, 1, 3, 1, 1, 1]
    best = records.best_row(df)
    assert best["trial"] == "t_00002"
    out = write_exported(exported_from(records.best_trial_record("rec-1", uri)), tmp_path / "best.yaml")
    doc = yaml.safe_load(out.read_text())
    assert doc["objective"] == {"metric": "val_acc", "searched": "val_acc", "mode": "max", "value": 1.0,
                                "trial": "t_00002", "epoch": 1}
    assert doc["config"]["lr"] == pytest.approx(0.02) and "rs_objective" not in doc["config"]
    assert doc["resources"] == {"cpus": 2.0, "gpus": 0.5} and doc["max_failures"] == 1
    assert doc["reproduce"] == {"seeds": [4, 5], "epochs": 7}
    assert main(["export", "rec-1", "--out", str(tmp_path / "e.yaml"), "--tracking-uri", uri]) == 0
    assert (tmp_path / "e.yaml").read_text() == out.read_text()  # one writer, one schema
    capsys.readouterr()
    assert main(["show", "rec-1", "--tracking-uri", uri]) == 0
    first = capsys.readouterr().out.splitlines()[2].split()
    assert first[0] == "t_00002"


def test_no_best_trial_when_nothing_holds_a_score():
    import pandas as pd

    df = pd.DataFrame({"trial": ["a", "b"], "best_val_acc": [0.9, float("nan")], "best_epoch": [1, None],
                       "outcome": ["diverged", "failed"]})
    df.attrs["best_column"] = "best_val_acc"
    ranked = records.rank(df, "best_val_acc", "max")
    ranked.attrs["best_column"] = "best_val_acc"
    assert records.best_row(ranked) is None


def test_resume_reuses_child_runs(store):
    """A callback restored from Tune's saved state (taken before some trials started) opens no duplicates."""
    uri, _, snapshot = store
    client = writer.client_for(uri)
    parent = schema.find_parent(client, "rec-1")
    before = {r.data.tags[schema.TRIAL_ID]: r.info.run_id for r in schema.child_runs(client, parent)}
    restored = pickle.loads(snapshot)
    restored.setup()
    for tid in TRIALS:
        restored.on_trial_start(0, [], _trial(tid, 0.5))
        restored.on_trial_result(0, [], _trial(tid, 0.5), {"epoch": 1, "val_acc": 0.1})
    after = [(r.data.tags[schema.TRIAL_ID], r.info.run_id) for r in schema.child_runs(client, parent)]
    assert len(after) == len(TRIALS) and dict(after) == before


def test_best_model_is_the_checkpoint_of_the_best_epoch_not_the_latest(store, tmp_path):
    """Ray keeps the best epoch's checkpoint beside the latest; the one logged is the best epoch's."""
    import pandas as pd
    import torch
    from ray import tune

    from search.finish import log_best_model

    uri, _, _ = store
    client = writer.client_for(uri)
    parent = client.create_run(writer.experiment_id(client, "ckpt"), run_name="ckpt").info.run_id
    checkpoints = []
    for epoch in (2, 3):
        d = tmp_path / f"checkpoint_{epoch}"
        d.mkdir()
        torch.save({"epoch": epoch}, d / "checkpoint.pt")
        checkpoints.append((tune.Checkpoint.from_directory(str(d)), {"epoch": epoch, "val_acc": 0.9}))
    result = SimpleNamespace(metrics={"trial_id": "t1", "epoch": 3}, path=str(tmp_path / "trial_t1"),
                             best_checkpoints=checkpoints)
    best = pd.Series({"trial": "t1", "best_epoch": 2, "run_id": None})
    log_best_model([result], best, client, parent)
    got = client.download_artifacts(parent, schema.BEST_CHECKPOINT, str(tmp_path / "dl"))
    assert torch.load(got, weights_only=True) == {"epoch": 2}
    tags = client.get_run(parent).data.tags
    assert (tags[schema.BEST_TRIAL], tags[schema.BEST_EPOCH]) == ("t1", "2")


def test_tuner_keeps_the_best_checkpoint_by_the_objective(tmp_path):
    from search.tuner import assemble_tuner

    tuner = assemble_tuner(family="optimization", cpus=1, gpus=0.25, name="x", storage=str(tmp_path), metric="pgd_acc",
                           mode="max", max_failures=3, callbacks=[], param_space={"seed": 0})
    run_config = tuner._local_tuner.get_run_config()
    ck = run_config.checkpoint_config
    assert (ck.num_to_keep, ck.checkpoint_score_attribute, ck.checkpoint_score_order) == (2, "pgd_acc", "max")
    assert run_config.failure_config.max_failures == 3


@pytest.mark.parametrize("name", ["activations", "batchnorm", "vgg_batchnorm", "losses", "optimizers",
                                  "regularization", "schedulers"])
def test_comparison_studies_say_how_their_table_compares(name):
    """Fashion-MNIST comparisons run every arm the full budget; the CIFAR-10 ones, under ASHA, say so."""
    from spaces.study import load_study

    small = load_study(ROOT / "spaces" / f"fmnist_{name}.yaml")
    assert small.budget.scheduler == "none" and "no early stopping" in small.description.lower()
    big = load_study(ROOT / "spaces" / f"cifar10_{name}.yaml")
    assert big.budget.scheduler == "none" or "ASHA stops weak arms early" in big.description


def test_pareto_front_uses_values_at_each_trials_best_epoch(tmp_path):
    """t2's final val_loss is the lowest, but at its best val_acc epoch it was dominated: not on the front."""
    from search.callbacks import MlflowTrialLogger
    from search.finish import mark_pareto
    from search.tuner import tracker_for
    from spaces.study import load_study

    (tmp_path / "p.yaml").write_text(STUDY.replace(
        "objective: {metric: val_acc, mode: max}",
        "objective: {metric: val_acc, mode: max, pareto_with: {metric: val_loss, mode: min}}"))
    study = load_study(tmp_path / "p.yaml")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = writer.client_for(uri)
    parent = writer.start_parent(client, study, "p-1", tmp_path / "p.yaml", sampler="tpe")
    logger = MlflowTrialLogger(uri, parent, "p-1", tracker_for(study))
    logger.setup()
    curves = {"t1": [(0.6, 0.6), (0.9, 0.3), (0.85, 0.35)], "t2": [(0.8, 0.5), (0.7, 0.2), (0.7, 0.1)]}
    for tid, curve in curves.items():
        trial = _trial(tid, 0.01)
        for epoch, (acc, loss) in enumerate(curve, start=1):
            logger.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": acc, "val_loss": loss})
        logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end(trials=[])
    table = records.trials("p-1", uri)
    assert dict(zip(table["trial"], table["at_best.val_loss"])) == pytest.approx({"t1": 0.3, "t2": 0.5})
    mark_pareto(study, table, client, parent)
    assert client.get_run(parent).data.tags["rs.pareto_front"] == "t1"
    tags = {r.data.tags[schema.TRIAL_ID]: r.data.tags["rs.pareto"] for r in schema.child_runs(client, client.get_run(parent))}
    assert tags == {"t1": "true", "t2": "false"}


def test_progress_line_counts_states_by_the_one_rule():
    import io

    from search.progress import LiveProgress

    stream = io.StringIO()
    progress = LiveProgress(TrialTracker("val_acc", "max", 2), num_samples=4, stream=stream, every_s=1e9)
    ends = {"a": ([0.5, 0.6], False), "b": ([0.4], True), "c": ([0.3], False)}
    for tid, (curve, stopped) in ends.items():
        trial = _trial(tid, 0.1)
        progress.on_trial_start(0, [], trial)
        for epoch, acc in enumerate(curve, start=1):
            progress.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": acc, "done": stopped})
        progress.on_trial_complete(0, [], trial)
    trial = _trial("d", 0.1, None)
    progress.on_trial_start(0, [], trial)
    progress.on_trial_error(0, [], trial)
    summary = progress.summary()
    assert "1 done | 1 stopped early | 1 ended | 1 failed | 4/4 | best val_acc 0.6000 (a)" in summary
    lines = stream.getvalue()
    assert "trial b stopped early by ASHA at epoch 1" in lines and "trial c ended by the time budget at epoch 1" in lines


def test_progress_under_a_constraint_shows_the_metric_never_the_penalized_score():
    import io

    from search.progress import LiveProgress

    stream = io.StringIO()
    progress = LiveProgress(TrialTracker("objective", "max", 1, companions=("pgd_acc_eps0.1",)), num_samples=2,
                            stream=stream, every_s=1e9)
    for tid, pgd, score in (("ok", 0.3, 0.3), ("bad", 0.6, 0.6 - 1000)):  # "bad": the constraint failed
        trial = _trial(tid, 0.1)
        progress.on_trial_start(0, [], trial)
        progress.on_trial_result(0, [], trial, {"epoch": 1, "objective": score, "pgd_acc_eps0.1": pgd})
        progress.on_trial_complete(0, [], trial)
    lines, summary = stream.getvalue(), progress.summary()
    assert "trial ok completed: best pgd_acc_eps0.1=0.3000" in lines
    assert "trial bad completed: best pgd_acc_eps0.1=0.6000 (infeasible)" in lines
    assert "best pgd_acc_eps0.1 0.3000 (ok)" in summary and "-999" not in lines + summary
