"""The analysis layer: records read back from MLflow, comparison tables, plots, calibration, UMAP, report.

No Ray: the MLflow store is built directly with ``MlflowClient`` in the shape ``records/schema.py``
writes (a parent run per search, a child run per trial), around a real tiny checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

import records
from analysis import calibration, embedding, plots, report, tables
from trainables.core import evaluate, train
from trainables.core.data import Split
from trainables.core.metric_names import robust_metric_name

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SPACE = {
    "optimizer": {"type": "choice", "values": ["sgd", "adam"], "log": False},
    "lr": {"type": "loguniform", "low": 1e-3, "high": 0.2, "log": False},
    "momentum": {"type": "uniform", "low": 0.5, "high": 0.95, "log": False, "when": {"optimizer": "sgd"}},
    "activation": {"type": "choice", "values": ["relu", "gelu"], "log": False},
    "batchnorm": {"type": "choice", "values": [True, False], "log": False},
}
EPS = (0.0, 8 / 255, 0.1)

# trial id -> (config, outcome, val_acc per epoch); robust metrics on the first two
TRIALS = {
    "t_best": ({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "activation": "relu", "batchnorm": True},
               "completed", [0.5, 0.8, 0.9]),
    "t_second": ({"optimizer": "adam", "lr": 0.002, "activation": "gelu", "batchnorm": False},
                 "completed", [0.4, 0.6, 0.7]),
    "t_stopped": ({"optimizer": "sgd", "lr": 0.15, "momentum": 0.6, "activation": "relu", "batchnorm": False},
                  "stopped early by ASHA at epoch 1", [0.2]),
    "t_failed": ({"optimizer": "adam", "lr": 0.01, "activation": "gelu", "batchnorm": True},
                 "failed: RuntimeError: boom", []),
}


def _text(v) -> str:  # records.schema.param_text
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)


def _png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 2000 and path.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A real CNN trained 2 epochs on digits, with its checkpoint."""
    ckpt = tmp_path_factory.mktemp("model") / "checkpoint.pt"
    cfg = {"dataset": "digits", "filters": [8, 16], "epochs": 2, "batch_size": 64, "device": "cpu"}
    result = train(cfg, on_epoch=lambda m, t: t.save_checkpoint(ckpt) if m["epoch"] == cfg["epochs"] else None)
    return result, ckpt


def _parent(client, exp, name, study_doc, tmp: Path, *, best_metric: str, best_value: float, best_trial: str,
            checkpoint: Path | None):
    tags = {"rs.role": "search", "rs.search": name, "rs.study": study_doc["name"], "rs.family": "optimization",
            "rs.dataset": "digits", "rs.sampler": "tpe", "rs.state": "finished", "rs.best_trial": best_trial}
    run = client.create_run(exp, run_name=name, tags=tags)
    rid = run.info.run_id
    params = {"family": "optimization", "dataset": "digits", "num_samples": 4, "max_epochs": 3,
              "objective": study_doc["objective"]["metric"], "mode": study_doc["objective"]["mode"], "sampler": "tpe",
              "fixed.model": "cnn", "fixed.filters": [8, 16]}
    client.log_batch(rid, params=[Param(k, _text(v)) for k, v in params.items()])
    study_file = tmp / f"{name}.yaml"
    study_file.write_text(yaml.safe_dump(study_doc))
    client.log_artifact(rid, str(study_file), "study")
    client.log_dict(rid, SPACE, "search_space.json")
    client.log_metric(rid, best_metric, best_value)
    if checkpoint is not None:
        client.log_artifact(rid, str(checkpoint), "best_model")
    return run


def _child(client, parent, name, tid, config, state, metrics_by_epoch, best_metric):
    run = client.create_run(parent.info.experiment_id, run_name=f"{name}/{tid}", tags={
        "mlflow.parentRunId": parent.info.run_id, "rs.role": "trial", "rs.search": name, "rs.trial_id": tid,
        "rs.state": "running", "rs.study": parent.data.tags["rs.study"]})
    rid = run.info.run_id
    full = {**config, "dataset": "digits", "model": "cnn", "filters": [8, 16], "epochs": 3, "seed": 0}
    client.log_batch(rid, params=[Param(k, _text(v)) for k, v in full.items()])
    client.log_dict(rid, full, "config.json")
    best, best_epoch = None, 0
    for epoch, metrics in enumerate(metrics_by_epoch, start=1):
        value = metrics[best_metric.removeprefix("best_")]
        if best is None or value >= best:
            best, best_epoch = value, epoch
        batch = [Metric(k, float(v), 1000 * epoch, epoch) for k, v in metrics.items()]
        client.log_batch(rid, metrics=batch + [Metric(best_metric, best, 1000 * epoch, epoch),
                                               Metric("best_epoch", best_epoch, 1000 * epoch, epoch)])
    client.set_tag(rid, "rs.state", state)
    client.set_tag(rid, "rs.epochs_run", str(len(metrics_by_epoch)))
    client.set_terminated(rid, "FAILED" if state.startswith("failed") else "FINISHED")
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model):
    """A sqlite MLflow store with search 'demo' (4 trials, robust metrics, a checkpoint) and a constrained one."""
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)  # records.reader_for refuses a store that does not exist yet
    exp = client.create_experiment("quick", artifact_location=(tmp / "artifacts").as_uri())
    doc = {"name": "quick", "family": "optimization", "dataset": "digits", "description": "A synthetic test search.",
           "objective": {"metric": "val_acc", "mode": "max"}, "search": SPACE}
    parent = _parent(client, exp, "demo", doc, tmp, best_metric="best_val_acc", best_value=0.9, best_trial="t_best",
                     checkpoint=tiny_model[1])
    run_ids = {}
    for tid, (config, state, curve) in TRIALS.items():
        epochs = []
        for e, acc in enumerate(curve, start=1):
            m = {"train_loss": 1.0 / e, "val_acc": acc, "val_loss": 1 - acc, "lr": config["lr"] / (e + 1)}
            if e == 3:
                m.update(test_acc=acc - 0.01, test_loss=1.1 - acc)
            if tid in ("t_best", "t_second") and e == len(curve):
                m["clean_acc"] = acc
                for eps in EPS:
                    drop = 0.0 if eps == 0 else eps * (3 if tid == "t_best" else 4)
                    m[robust_metric_name("fgsm", eps)] = acc - drop
                    m[robust_metric_name("pgd", eps)] = acc - 1.5 * drop
                    m[robust_metric_name("noise", eps)] = acc - 0.2 * drop
            epochs.append(m)
        run_ids[tid] = _child(client, parent, "demo", tid, config, state, epochs, "best_val_acc")
    # a trial restored after a failure logs epoch 2 again: the later value must win
    client.log_batch(run_ids["t_second"], metrics=[Metric("val_acc", 0.65, 2500, 2)])

    cdoc = {**doc, "objective": {"metric": "val_acc", "mode": "max", "constraint": {"metric": "val_acc", "min": 0.5}}}
    cparent = _parent(client, exp, "constrained", cdoc, tmp, best_metric="best_objective", best_value=0.8,
                      best_trial="c1", checkpoint=None)
    c1 = _child(client, cparent, "constrained", "c1", TRIALS["t_best"][0], "completed",
                [{"val_acc": 0.8, "objective": 0.8}], "best_objective")
    c2 = _child(client, cparent, "constrained", "c2", TRIALS["t_second"][0], "completed",
                [{"val_acc": 0.3, "objective": 0.3 - 1000}], "best_objective")
    for rid, acc in ((c1, 0.8), (c2, 0.3)):  # the tracking callback's companions at the best epoch
        client.log_metric(rid, "at_best.val_acc", acc, step=1)
    return uri, run_ids


# ------------------------------------------------------------------ records
def test_trials_types_params_sorts_and_keeps_the_searched_lr(store):
    uri, run_ids = store
    df = records.trials("demo", uri)
    assert list(df["trial"]) == ["t_best", "t_second", "t_stopped", "t_failed"]  # best first, failed (NaN) last
    assert df.attrs["objective"] == "val_acc" and df.attrs["best_column"] == "best_val_acc"
    best = df.iloc[0]
    assert best["lr"] == pytest.approx(0.05) and df["batchnorm"].tolist() == [True, False, False, True]
    assert all(isinstance(v, bool) for v in df["batchnorm"].tolist())  # "True" / "False" text typed back
    assert df["lr"].dtype == float and df["momentum"].dtype == float
    assert math.isnan(df.loc[df.trial == "t_second", "momentum"].item())  # conditional: did not apply to adam
    assert best["last_lr"] == pytest.approx(0.05 / 4)  # the scheduled lr metric does not overwrite the param
    assert list(df["outcome"]) == ["completed", "completed", "stopped", "failed"]
    assert list(df["epochs"]) == [3, 3, 1, 0]
    assert list(df["best_epoch"].astype(float).fillna(0)) == [3, 3, 1, 0]
    assert df.loc[df.trial == "t_second", "best_val_acc"].item() == pytest.approx(0.7)
    assert df.loc[df.trial == "t_second", "val_acc"].item() == pytest.approx(0.7)  # final epoch's value
    assert math.isnan(df.loc[df.trial == "t_stopped", "test_acc"].item())
    assert df.loc[df.trial == "t_best", "run_id"].item() == run_ids["t_best"]


def test_constrained_search_uses_best_objective(store, tmp_path, monkeypatch):
    uri, _ = store
    drawn = []  # every value a figure of the report receives

    def spy(fn, values):
        def wrapped(*args, **kwargs):
            drawn.extend(values(*args, **kwargs))
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(plots, "by_parameter", spy(plots.by_parameter, lambda df, p, metric, *a, **k: df[metric]))
    monkeypatch.setattr(plots, "learning_curves", spy(plots.learning_curves,
                                                      lambda h, out, metric, **k: h[h["metric"] == metric]["value"]))
    info = records.search_info("constrained", uri)
    assert info.best_column == "best_objective" and info.constraint == {"metric": "val_acc", "min": 0.5}
    df = records.trials("constrained", uri, info=info)
    assert list(df["trial"]) == ["c1", "c2"] and df["best_objective"].iloc[1] == pytest.approx(-999.7)
    assert list(df["best_val_acc"]) == [0.8, 0.3] and list(df["feasible"]) == [True, False]
    text = report.build("constrained", uri, tmp_path / "rep", best_model=False, log=lambda m: None,
                        log_to_mlflow=False).read_text()
    assert "val_acc (max), subject to val_acc >= 0.5" in text and "### Top 2 by `val_acc`" in text
    # the penalized score never reaches the page: no number below val_acc's range [0, 1] in any table
    numbers = [float(x) for line in text.splitlines() if line.startswith("|")
               for x in re.findall(r"(?<![\w.])-?\d+\.?\d*(?:e-?\d+)?(?![\w.])", line)]
    assert numbers and min(numbers) >= 0 and "-999" not in text and "objective" not in text.split("## Trials")[1]
    assert len(drawn) > 4 and min(drawn) >= 0  # nor in any plot


def test_histories_long_format_only_the_metrics_asked_last_value_wins(store):
    uri, _ = store
    h = records.histories("demo", uri, metrics=("val_acc",))
    assert list(h.columns) == ["trial", "epoch", "metric", "value"]
    assert set(h["metric"]) == {"val_acc"}
    assert len(h) == 3 + 3 + 1  # the failed trial logged nothing; the re-logged epoch is counted once
    second = h[h.trial == "t_second"].set_index("epoch")["value"]
    assert second.to_dict() == pytest.approx({1: 0.4, 2: 0.65, 3: 0.7})
    only = records.histories("demo", uri, metrics=("val_acc", "val_loss"), trial_ids=["t_stopped"])
    assert set(only["trial"]) == {"t_stopped"} and sorted(only["metric"]) == ["val_acc", "val_loss"]


def test_unknown_search_and_missing_store_raise(store, tmp_path):
    uri, _ = store
    with pytest.raises(records.SearchNotFound, match="no search named 'nope'"):
        records.search_info("nope", uri)
    missing = tmp_path / "absent.db"
    with pytest.raises(records.SearchNotFound, match="no MLflow store"):
        records.reader_for(f"sqlite:///{missing}")
    assert not missing.exists()  # a read must never create an empty store


# ------------------------------------------------------------------ tables
@pytest.fixture
def table():
    return pd.DataFrame({
        "act": ["relu", "relu", "gelu", "gelu", "gelu", "silu"],
        "mom": [0.9, None, 0.8, None, None, None],
        "acc": [0.9, 0.7, 0.6, 0.8, float("nan"), 0.95],
        "outcome": ["completed", "stopped", "completed", "completed", "failed", "stopped"],
    })


def test_compare_counts_means_and_sorts(table):
    out = tables.compare(table, "act", "acc", "max")
    assert list(out["act"]) == ["silu", "relu", "gelu"]  # by mean, best first
    relu = out.set_index("act").loc["relu"]
    assert (relu["n"], relu["full_budget"]) == (2, 1)
    assert relu["mean_best"] == pytest.approx(0.8) and relu["std_best"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    gelu = out.set_index("act").loc["gelu"]
    assert gelu["n"] == 3 and gelu["mean_best"] == pytest.approx(0.7) and gelu["best"] == pytest.approx(0.8)
    assert math.isnan(out.set_index("act").loc["silu", "std_best"])
    low = tables.compare(table, "act", "acc", "min")
    assert list(low["act"]) == ["gelu", "relu", "silu"] and low.set_index("act").loc["gelu", "best"] == 0.6


def test_compare_at_a_common_epoch_ranks_like_with_like(table):
    """silu's best (0.95) came from a longer run; at the common epoch it is the worst arm."""
    common = pd.Series([0.5, 0.6, 0.55, 0.7, float("nan"), 0.3], index=table.index)
    out = tables.compare(table, "act", "acc", "max", at_common=common, common_epoch=1)
    assert list(out.columns) == ["act", "n", "full_budget", "mean_at_e1", "std_at_e1", "mean_best", "std_best", "best"]
    assert list(out["act"]) == ["gelu", "relu", "silu"]  # sorted by the common epoch, not by the mixed-budget best
    assert out.set_index("act").loc["gelu", "mean_at_e1"] == pytest.approx(0.625)


def test_at_common_epoch_is_the_last_epoch_every_scored_trial_reached(store):
    uri, _ = store
    df = records.trials("demo", uri)
    hist = records.histories("demo", uri, metrics=("val_acc",))
    epoch, values = records.at_common_epoch(df, hist, "val_acc")
    assert epoch == 1  # t_stopped ran one epoch; the failed trial (0 epochs) does not pull it to 0
    assert dict(zip(df["trial"], values.fillna(-1))) == pytest.approx(
        {"t_best": 0.5, "t_second": 0.4, "t_stopped": 0.2, "t_failed": -1})


def test_compare_groups_absent_conditional_values_and_rejects_unknown_columns(table):
    out = tables.compare(table, "mom", "acc", "max").set_index("mom")
    assert out.loc[tables.ABSENT, "n"] == 4
    with pytest.raises(KeyError, match="no column 'nope'"):
        tables.compare(table, "nope", "acc")
    with pytest.raises(ValueError, match="mode"):
        tables.compare(table, "act", "acc", "maximize")


def test_to_markdown_and_csv(table, tmp_path):
    df = table.assign(act=["re|lu", "relu", "gelu", "gelu", "gelu", "silu"])
    md = tables.to_markdown(df).splitlines()
    assert len(md) == 2 + len(df)
    assert re.fullmatch(r"\| act +\| +mom \| +acc \| outcome +\|", md[0])
    assert re.fullmatch(r"\|-+\|-+:\|-+:\|-+\|", md[1])  # numbers right-aligned
    assert "re\\|lu" in md[2] and md[2].count(" | ") == 3  # an escaped pipe is not a column break
    cells = [c.strip() for c in md[6].strip("|").split("|")]
    assert cells == ["gelu", "", "", "failed"]  # missing values are blank
    assert "| 1.0 |" in tables.to_markdown(pd.DataFrame({"x": [1.0]}))
    path = tables.to_csv(df, tmp_path / "sub" / "t.csv")
    assert pd.read_csv(path).shape == df.shape


# ------------------------------------------------------------------ plots
def test_robust_points_parses_metric_names_and_uses_clean_at_eps_zero():
    names = {robust_metric_name(a, eps): v for a, v in (("fgsm", 0.5), ("pgd", 0.3), ("noise", 0.9)) for eps in (8 / 255, 0.1)}
    metrics = {**names, "clean_acc": 0.95, "best_pgd_acc_eps0.1": 0.99, "indep_pgd_acc": 0.1, "val_acc": 0.9,
               "fgsm_acc_eps1e-05": 0.94, "noise_acc_eps0.2": float("nan"), "pgd_acc_epsx": 0.5}
    pts = plots.robust_points(metrics)
    assert list(pts["attack"].unique()) == ["fgsm", "pgd", "noise"]
    fgsm = pts[pts.attack == "fgsm"]
    assert fgsm["eps"].tolist() == pytest.approx([0.0, 1e-05, 8 / 255, 0.1], rel=1e-4)  # tags keep 4 digits
    assert fgsm["acc"].tolist() == pytest.approx([0.95, 0.94, 0.5, 0.5])
    assert len(pts[pts.attack == "noise"]) == 3  # NaN skipped, clean added
    explicit = plots.robust_points({"pgd_acc_eps0": 0.7, "pgd_acc_eps0.1": 0.2, "clean_acc": 0.9})
    assert explicit["eps"].tolist() == [0.0, 0.1] and explicit["acc"].tolist() == [0.7, 0.2]
    assert plots.robust_points({"clean_acc": 0.9}).empty


def test_robustness_curve_from_dict_and_trials(store, tmp_path):
    uri, _ = store
    df = records.trials("demo", uri)
    assert _png(plots.robustness_curve(df, tmp_path / "r.png", k=3))
    metrics = df.iloc[0].to_dict()
    assert _png(plots.robustness_curve(metrics, tmp_path / "d.png"))
    with pytest.raises(ValueError, match="no robust metrics"):
        plots.robustness_curve({"val_acc": 0.9}, tmp_path / "x.png")


def test_learning_curves_and_parameter_plots(store, tmp_path):
    uri, _ = store
    df, hist = records.trials("demo", uri), records.histories("demo", uri, metrics=("val_acc",))
    for param in ("activation", "lr", "momentum", "batchnorm"):
        assert _png(plots.learning_curves(hist, tmp_path / f"c_{param}.png", trials=df, color_by=param))
        assert _png(plots.by_parameter(df, param, "best_val_acc", tmp_path / f"p_{param}.png"))
    assert sorted(["silu", "1.0", "n/a", "0.5", "relu"], key=plots._level_order) == ["0.5", "1.0", "silu", "relu", "n/a"]
    with pytest.raises(ValueError, match="no 'test_acc' history"):
        plots.learning_curves(hist, tmp_path / "x.png", "test_acc")


# ------------------------------------------------------------------ calibration and UMAP
class _Constant(torch.nn.Module):
    def __init__(self, probs):
        super().__init__()
        self.logits = torch.log(torch.tensor(probs))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_ece_of_a_known_miscalibrated_model():
    """Always 75 % sure of class 0, right half the time: ECE = |0.5 - 0.75| = 0.25."""
    split = Split(torch.zeros(10, 1, 2, 2), torch.tensor([0, 1] * 5))
    result = calibration.calibration(_Constant([0.75, 0.25]), split)
    assert result.ece == pytest.approx(0.25) and result.accuracy == 0.5 and result.confidence == pytest.approx(0.75)
    assert result.bins["count"].sum() == 10 and result.bins.loc[11, "count"] == 10  # 0.75 lies in (0.7333, 0.8]
    conf = np.array([0.95] * 10 + [0.55] * 10)
    correct = np.array([1] * 9 + [0] + [1] * 5 + [0] * 5)  # 90 % right at 0.95, 50 % right at 0.55
    ece, _ = calibration.expected_calibration_error(conf, correct)
    assert ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)


def test_calibration_of_a_trained_model(tiny_model, tmp_path):
    result, _ = tiny_model
    split = _test_split(result)
    cal = calibration.calibration(result.model, split, tmp_path / "rel.png")
    assert 0.0 <= cal.ece <= 1.0
    assert cal.accuracy == pytest.approx(evaluate(result.model, split)[1])
    assert cal.bins["count"].sum() == len(split) and _png(cal.path)


def _test_split(result):
    from trainables.core.trainer import build_data

    return build_data(result.config, torch.device("cpu")).test


def test_umap_of_penultimate_features(tiny_model, tmp_path):
    _, ckpt = tiny_model
    model, cfg, split = embedding.from_checkpoint(ckpt, "test")
    assert cfg.dataset == "digits" and len(split) == 359
    feats = embedding.features(model, embedding.subsample(split, 150))
    assert feats.shape == (150, 256)  # the CNN's 256-unit layer before its head
    path = embedding.umap_plot(model, split, tmp_path / "umap.png", n=150, n_epochs=50)
    assert _png(path)
    # a stored projection is reused for the same model and settings, recomputed for another model
    stored = tmp_path / "umap.npz"
    xy, labels, reused = embedding.projection(model, split, n=150, n_epochs=50, stored=stored, key="run/t1/3")
    assert not reused and stored.is_file() and xy.shape == (150, 2) and len(labels) == 150
    again, _, reused = embedding.projection(model, split, n=150, n_epochs=50, stored=stored, key="run/t1/3")
    assert reused and np.array_equal(again, xy)
    _, _, reused = embedding.projection(model, split, n=150, n_epochs=50, stored=stored, key="run/t1/4")
    assert not reused
    with pytest.raises(ValueError, match="split must be"):
        embedding.from_checkpoint(ckpt, "validation")


# ------------------------------------------------------------------ report and CLI
def test_report_end_to_end(store, tmp_path, capsys):
    uri, _ = store
    path = report.build("demo", uri, tmp_path / "rep", umap_points=150)
    text = path.read_text()
    assert path == tmp_path / "rep" / "report.md"
    assert "# Search `demo`" in text and "A synthetic test search." in text
    assert re.search(r"\| completed +\| +2 \|", text) and re.search(r"\| failed +\| +1 \|", text)
    assert "`t_failed` failed: RuntimeError: boom" in text
    for param in ("optimizer", "activation", "batchnorm"):  # categorical: a comparison table each
        assert re.search(rf"\| {param} +\| +n \| full_budget \| mean_at_e1 \|", text), param
        assert (tmp_path / "rep" / f"compare_{param}.csv").is_file()
    assert not re.search(r"\| lr +\| +n \|", text)
    links = re.findall(r"\]\(([^)]+)\)", text)
    for name in ("robustness.png", "umap.png", "calibration.png", "curves_activation.png", "param_lr.png"):
        assert name in links, name
    for link in links:
        assert (tmp_path / "rep" / link).is_file(), link
    assert all(_png(tmp_path / "rep" / link) for link in links if link.endswith(".png"))
    robust_header = next(line for line in text.splitlines() if line.startswith("| trial ") and "pgd_acc_eps" in line)
    assert re.findall(r"(\w+_acc_eps[\d.]+)", robust_header) == [
        "fgsm_acc_eps0.03137", "fgsm_acc_eps0.1", "pgd_acc_eps0.03137", "pgd_acc_eps0.1",
        "noise_acc_eps0.03137", "noise_acc_eps0.1"]  # eps 0 repeats clean_acc: left out
    assert re.search(r"expected calibration error \(15 bins\) \*\*0\.\d{4}\*\*", text)
    for name in ("optuna_history.png", "optuna_importances.png", "optuna_parallel.png", "optuna_contour.png"):
        assert name in links, name  # Optuna's figures of the rebuilt study, on the searched metric
    page = (tmp_path / "rep" / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == len([x for x in links if x.endswith(".png")])
    assert all(src.startswith("data:image/png;base64,") for src in sources)  # self-contained
    assert "<table>" in page
    client = MlflowClient(uri)
    parent = records.search_info("demo", uri).run_id
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/umap.png"} <= logged
    out = capsys.readouterr().out
    assert "reading search 'demo'" in out and "UMAP" in out and "report logged to MLflow: " in out


def test_cli_unknown_search_exits_2_without_traceback_and_never_imports_ray(store):
    uri, _ = store
    script = ("import sys\n"
              "from search.cli import main\n"
              f"code = main(['report', 'nope', '--tracking-uri', {uri!r}])\n"
              "import analysis.embedding, analysis.report, analysis.calibration\n"
              "print('RAY' if 'ray' in sys.modules else 'NO RAY')\n"
              "sys.exit(code)\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no search named 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.strip().endswith("NO RAY")
    assert time.perf_counter() - t0 < 60


def test_report_command_on_a_missing_store_exits_2(tmp_path, capsys):
    from search.cli import main

    assert main(["report", "demo", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no MLflow store") and not (tmp_path / "none.db").exists()


def test_report_command_writes_the_report(store, tmp_path, capsys):
    from search.cli import main

    uri, _ = store
    assert main(["report", "demo", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-best-model",
                 "--no-mlflow"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md") and (tmp_path / "r" / "report.md").is_file()
    text = (tmp_path / "r" / "report.md").read_text()
    assert "## Skipped sections" in text and "- Best model: --no-best-model" in text
