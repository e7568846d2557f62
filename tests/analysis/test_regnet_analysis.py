"""RegNet report figures from plain tables: seed bands, parameter curves, latent plots."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import regnet


def _trials():
    rows = []
    for seed in range(3):
        for head, mu in (("gaussian", 10.0), ("gaussian", 70.0), ("linear", None)):
            base = 0.9 - 0.01 * seed
            rows.append({"trial": f"{head}{mu}_{seed}", "head": head, "mu_t": mu, "seed": seed, "val_acc": base,
                         "clean_acc": base, "fgsm_plain_acc_eps0.1": base - 0.3 - 0.1 * seed,
                         "fgsm_plain_acc_eps0.3": 0.1, "val_kurtosis_mean": 3.0 + (mu or 0) / 10,
                         "val_skew_mean": 0.1})
    return pd.DataFrame(rows)


def test_grouped_eps_curves_average_over_seeds():
    curves = regnet.grouped_eps_curves(_trials(), ["head", "mu_t", "seed"][:2])
    assert len(curves) == 3
    eps, mean, std = curves["head=gaussian, mu_t=10.0 (n=3)"]
    assert eps == [0.0, 0.1, 0.3]
    assert mean[1] == pytest.approx(np.mean([0.6, 0.49, 0.38]))
    assert std[1] == pytest.approx(np.std([0.6, 0.49, 0.38], ddof=1))


def test_bands_only_over_distinct_seeds():
    """A grid repeating a configuration with the same seed is one run: one line, n=1, no band (NaN std)."""
    df = _trials()
    repeated = pd.concat([df[df["seed"] == 0]] * 2, ignore_index=True)  # each point twice, seed 0 both times
    curves = regnet.grouped_eps_curves(repeated, ["head", "mu_t"])
    eps, mean, std = curves["head=gaussian, mu_t=10.0 (n=1)"]
    assert mean[1] == pytest.approx(0.6) and np.isnan(std).all()
    no_seed = repeated.drop(columns="seed")  # the study's one fixed seed
    assert "head=gaussian, mu_t=10.0 (n=1)" in regnet.grouped_eps_curves(no_seed, ["head", "mu_t"])


def test_sections_write_their_figures(tmp_path, monkeypatch):
    from analysis.sections import ReportContext

    df = _trials().assign(best_val_acc=lambda d: d["val_acc"])
    monkeypatch.setattr(regnet.records, "histories", lambda *a, **k: pd.DataFrame(
        {"trial": df["trial"], "epoch": 1, "metric": "val_kurtosis_mean", "value": df["val_kurtosis_mean"]}))
    monkeypatch.setattr(regnet.records, "reproduction_seeds", lambda *a, **k: pd.DataFrame())
    info = SimpleNamespace(name="s", uri="", fixed={}, best_column="best_val_acc", shown_column="best_val_acc",
                           space={"head": {}, "mu_t": {}, "seed": {}}, best_trial=None)
    ctx = ReportContext(info, df, tmp_path, client=None, log=lambda m: None, best_model=False)
    md = regnet.sections(ctx)
    for name in ("regnet_acc_vs_mu.png", "regnet_moments_vs_mu.png", "regnet_eps.png",
                 "regnet_val_kurtosis_mean_epochs.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
        assert any(name in line for line in md)
    assert any("No `search reproduce`" in line for line in md)


def test_latent_plots(tmp_path):
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(200)
    z = 10 * torch.eye(3)[y] + torch.randn(len(y), 3, generator=gen)
    path, rmse = regnet.latent_histograms(z, y, 10.0, 1.0, tmp_path / "h.png")
    assert path.stat().st_size > 1000 and len(rmse) == 3 and max(rmse) < 0.1
    regnet.latent_scatter({"clean": (z, y), "shifted": (z + 3, y)}, 10.0, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_model_sections_of_a_three_class_checkpoint(tmp_path, tiny):
    from analysis import embedding
    from trainables.core import Trainer

    trainer = Trainer({**tiny, "head": "gaussian", "loss": "none", "mu_t": 10.0, "classes": [0, 1, 2],
                       "optimizer": "adam", "lr": 0.003, "weight_decay": 0.0})
    trainer.fit()
    ckpt = trainer.save_checkpoint(tmp_path / "c.pt")
    model, cfg, split = embedding.from_checkpoint(ckpt, "test")
    md = regnet.model_sections(model, cfg, split, tmp_path, log=lambda m: None)
    assert (tmp_path / "regnet_histograms.png").is_file() and (tmp_path / "regnet_latent3d.png").is_file()
    assert any("RMSE" in line for line in md)
    linear = Trainer({**tiny, "epochs": 1})
    assert regnet.model_sections(linear.model, linear.cfg, linear.data.test, tmp_path) == []


def test_reproduction_seeds_are_drawn_as_their_own_band(tmp_path, monkeypatch):
    from analysis.sections import ReportContext

    df = _trials()
    seeds = pd.DataFrame({"run": ["s-reproduce-1"] * 2, "seed": [0, 1], "clean_acc": [0.9, 0.8],
                          "fgsm_plain_acc_eps0.1": [0.6, 0.4]})
    monkeypatch.setattr(regnet.records, "reproduction_seeds", lambda *a, **k: seeds)
    drawn = {}
    monkeypatch.setattr(regnet, "eps_bands", lambda curves, out, **k: drawn.update(curves))
    info = SimpleNamespace(name="s", uri="", fixed={}, space={"head": {}, "mu_t": {}, "seed": {}})
    regnet._eps_sections(ReportContext(info, df, tmp_path, client=None, log=lambda m: None))
    eps, mean, std = drawn["best configuration, reproduced (s-reproduce-1, n=2 seeds)"]
    assert eps == [0.0, 0.1] and mean[1] == pytest.approx(0.5) and std[1] == pytest.approx(np.std([0.6, 0.4], ddof=1))
