"""The training loop: learning, determinism, checkpoint resume, SWA, schedulers, optimizers, callbacks."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from trainables.core import TrainConfig, Trainer, evaluate, load_model, train
from trainables.core.optim import OPTIMIZERS, SignSGD

TIMING = ("epoch_time", "samples_per_s")
SMALL = {"max_train_samples": 256}  # a few steps per epoch: enough to see a schedule or an update


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def params_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def displacement(before: list[torch.Tensor], model: torch.nn.Module) -> float:
    return sum((p.detach() - b).pow(2).sum().item() for b, p in zip(before, model.parameters())) ** 0.5


# ---------------------------------------------------------------- learning
def test_learns_digits_above_90_percent(tiny):
    result = train({**tiny, "filters": [16, 32], "epochs": 4})
    assert result.final["val_acc"] > 0.9
    assert result.final["test_acc"] > 0.85
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.data_source == "sklearn.datasets.load_digits"


# ---------------------------------------------------------------- determinism
def test_same_seed_same_metrics_different_seed_different(tiny):
    cfg = {**tiny, "dropout": 0.2, "crop_padding": 1}  # dropout and crops use both RNGs
    a, b = train(cfg, seed=3), train(cfg, seed=3)
    assert [without_timing(m) for m in a.history] == [without_timing(m) for m in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    c = train(cfg, seed=4)
    assert [without_timing(m) for m in c.history] != [without_timing(m) for m in a.history]


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("extra", [{}, {"swa": True, "swa_start": 1}], ids=["plain", "swa"])
def test_resume_continues_where_the_checkpoint_left_off(tiny, tmp_path, extra):
    # dropout (global RNG), crops (trainer generator), momentum (optimizer state), cosine (scheduler state)
    cfg = {**tiny, "epochs": 3, "dropout": 0.2, "crop_padding": 1, "scheduler": "cosine", **extra}
    ckpt = tmp_path / "run" / "epoch1.pt"

    def save_after_first(metrics, trainer):
        if metrics["epoch"] == 1:
            trainer.save_checkpoint(ckpt)

    full = train(cfg, on_epoch=save_after_first)
    assert ckpt.is_file() and not ckpt.with_suffix(".tmp").exists()

    torch.manual_seed(12345)  # the resumed run must not depend on the state the process happens to be in
    seen_epochs = []
    resumed = train(cfg, resume_from=ckpt, on_epoch=lambda m, t: seen_epochs.append(m["epoch"]))
    assert seen_epochs == [2, 3]  # continued, not restarted
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == full.history[0]  # epoch 1 comes from the checkpoint, timings included
    assert [without_timing(m) for m in resumed.history] == [without_timing(m) for m in full.history]
    assert "test_acc" in resumed.final
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(pa, pb)


def test_load_model_round_trips_and_evaluates_the_same(tiny, tmp_path):
    ckpt = tmp_path / "final.pt"
    result = train(tiny, on_epoch=lambda m, t: t.save_checkpoint(ckpt) if m["epoch"] == tiny["epochs"] else None)
    state = torch.load(ckpt, weights_only=True)  # plain tensors and containers: no pickled code
    assert state["epoch"] == tiny["epochs"] and len(state["history"]) == tiny["epochs"]

    model, cfg = load_model(ckpt)
    assert isinstance(cfg, TrainConfig) and cfg.filters == (8, 16)
    assert not model.training
    for (name, a), (_, b) in zip(result.model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    trainer = Trainer(cfg)
    loss, acc = evaluate(model, trainer.data.test, 256, trainer.loss_fn)
    assert acc == result.final["test_acc"]
    assert loss == pytest.approx(result.final["test_loss"], rel=1e-5)


def test_load_model_needs_no_data_and_leaves_the_global_rng_alone(tiny, tmp_path, monkeypatch):
    ckpt = tmp_path / "final.pt"
    train(tiny, on_epoch=lambda m, t: t.save_checkpoint(ckpt) if m["epoch"] == tiny["epochs"] else None)
    train_mod = sys.modules["trainables.core.trainer"]
    monkeypatch.setattr(train_mod, "load", lambda *a, **k: pytest.fail("load_model loaded the dataset"))
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    model, _ = load_model(ckpt)
    assert torch.equal(torch.rand(3), expected)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


# ---------------------------------------------------------------- SWA
def test_swa_averages_and_reports(tiny):
    trainers = []
    result = train({**tiny, "epochs": 4, "swa": True, "swa_start": 2, "swa_lr": 0.01},
                   on_epoch=lambda m, t: trainers.append(t))
    trainer = trainers[-1]
    assert trainer.swa.model.n_averaged.item() == 3  # after epochs 2, 3 and 4
    assert result.model is trainer.swa.model.module  # the reported model is the average
    live = dict(trainer.model.named_parameters())
    assert any(not torch.equal(p, live[n]) for n, p in result.model.named_parameters())
    # the final val/test metrics are those of the averaged model (BatchNorm statistics recomputed)
    val_loss, val_acc = evaluate(result.model, trainer.data.val, 1024, trainer.loss_fn)
    assert result.final["val_acc"] == val_acc
    assert result.final["val_loss"] == pytest.approx(val_loss, rel=1e-5)
    assert result.final["test_acc"] > 0.5
    # SWALR takes over the learning rate from the swa start on
    assert result.history[-1]["lr"] != result.history[0]["lr"]


def test_swa_checkpoint_loads_the_averaged_model(tiny, tmp_path):
    ckpt = tmp_path / "swa.pt"
    cfg = {**tiny, "epochs": 4, "swa": True, "swa_start": 2}
    result = train(cfg, on_epoch=lambda m, t: t.save_checkpoint(ckpt) if m["epoch"] == 4 else None)
    model, _ = load_model(ckpt)
    for (name, a), (_, b) in zip(result.model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name  # the average with its recomputed BatchNorm statistics
    trainer = Trainer(cfg)
    assert evaluate(model, trainer.data.test)[1] == result.final["test_acc"]


def test_swa_run_stopped_early_reports_the_live_model(tiny):
    # The average's BatchNorm statistics are only recomputed at the last epoch: before that it is not the model.
    trainers = []

    def stop_at_three(metrics, trainer):
        trainers.append(trainer)
        return metrics["epoch"] == 3

    result = train({**tiny, "epochs": 5, "swa": True, "swa_start": 1}, on_epoch=stop_at_three)
    assert len(result.history) == 3
    assert result.model is trainers[-1].model


# ---------------------------------------------------------------- schedulers and optimizers
@pytest.mark.parametrize(
    "sched, epochs, expected_lrs",
    [
        ({"scheduler": "none"}, 3, [0.1, 0.1, 0.1]),
        ({"scheduler": "step", "step_size": 1, "gamma": 0.5}, 3, [0.1, 0.05, 0.025]),
        ({"scheduler": "plateau"}, 2, [0.1, 0.1]),
        ({"scheduler": "cosine", "min_lr": 0.0}, 3, [0.1, 0.075, 0.025]),
        ({"scheduler": "onecycle"}, 2, [0.1 / 25, None]),  # OneCycleLR starts at max_lr / div_factor
        ({"scheduler": "cosine", "min_lr": 0.0, "warmup_epochs": 1}, 3, [0.05, 0.1, 0.05]),
        ({"scheduler": "step", "warmup_epochs": 2, "step_size": 1, "gamma": 0.5}, 4, [0.1 / 3, 0.2 / 3, 0.1, 0.05]),
    ],
    ids=["none", "step", "plateau", "cosine", "onecycle", "cosine+warmup", "step+warmup"],
)
def test_every_scheduler_trains_and_follows_its_schedule(tiny, sched, epochs, expected_lrs):
    cfg = TrainConfig.from_dict({**tiny, **SMALL, "epochs": epochs, "lr": 0.1, "optimizer": "sgd", **sched})
    trainer = Trainer(cfg)
    before = params_of(trainer.model)
    result = trainer.fit()
    assert displacement(before, trainer.model) > 0
    assert all(math.isfinite(m["train_loss"]) for m in result.history)
    lrs = [m["lr"] for m in result.history]
    for got, want in zip(lrs, expected_lrs):
        if want is not None:
            assert got == pytest.approx(want, rel=1e-6), lrs
    if sched["scheduler"] == "onecycle":
        assert lrs[1] > lrs[0]  # warming up towards max_lr within the cycle


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_takes_a_step(tiny, optimizer):
    lr = 0.001 if optimizer in ("adam", "adamw", "sign_sgd") else 0.05
    trainer = Trainer({**tiny, **SMALL, "epochs": 1, "optimizer": optimizer, "lr": lr})
    before = params_of(trainer.model)
    loss, acc, seen, _ = trainer.train_epoch()
    assert seen == 256 and math.isfinite(loss) and 0 <= acc <= 1
    assert displacement(before, trainer.model) > 0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def _train_one_epoch(cfg: dict) -> tuple[Trainer, list[torch.Tensor]]:
    trainer = Trainer(cfg)
    before = params_of(trainer.model)
    trainer.train_epoch()
    return trainer, before


def weight_l1(trainer: Trainer) -> float:
    return sum(p.abs().sum().item() for p in trainer.model.parameters() if p.dim() > 1)


def test_l1_penalty_changes_training_and_shrinks_weights(tiny):
    cfg = {**tiny, **SMALL, "weight_decay": 0.0, "scheduler": "none"}
    plain, _ = _train_one_epoch(cfg)
    l1, _ = _train_one_epoch({**cfg, "l1": 1e-3})
    assert weight_l1(l1) < weight_l1(plain)


def test_grad_clipping_changes_training_and_limits_steps(tiny):
    cfg = {**tiny, **SMALL, "momentum": 0.0, "scheduler": "none", "weight_decay": 0.0, "lr": 0.1}
    plain, before = _train_one_epoch(cfg)
    clipped, before_c = _train_one_epoch({**cfg, "grad_clip": 0.01})
    assert all(torch.equal(a, b) for a, b in zip(before, before_c))  # same start
    moved_plain, moved_clipped = displacement(before, plain.model), displacement(before_c, clipped.model)
    assert moved_clipped < moved_plain
    # plain SGD with clipped gradients: each of the 4 steps moves the weights by at most lr * clip
    assert moved_clipped <= 4 * 0.1 * 0.01 * (1 + 1e-4)


# ---------------------------------------------------------------- callbacks and reporting
def test_on_epoch_returning_true_stops_early(tiny):
    calls = []

    def stop_at_two(metrics, trainer):
        calls.append(metrics["epoch"])
        return metrics["epoch"] == 2

    result = train({**tiny, **SMALL, "epochs": 5}, on_epoch=stop_at_two)
    assert calls == [1, 2]
    assert len(result.history) == 2 and result.final["epoch"] == 2


def test_on_epoch_truthy_but_not_true_does_not_stop(tiny):
    result = train({**tiny, **SMALL, "epochs": 2}, on_epoch=lambda m, t: 1)
    assert len(result.history) == 2


def test_test_metrics_only_at_the_last_epoch(tiny):
    result = train({**tiny, **SMALL, "epochs": 3})
    assert [("test_acc" in m, "test_loss" in m) for m in result.history] == [(False, False)] * 2 + [(True, True)]
    assert all("val_acc" in m and "train_loss" in m and "lr" in m for m in result.history)
    assert 0 <= result.final["test_acc"] <= 1


# ---------------------------------------------------------------- SignSGD
def test_sign_sgd_moves_each_parameter_by_exactly_lr_times_sign_of_grad():
    lr = 0.25
    p = torch.nn.Parameter(torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]]))
    q = torch.nn.Parameter(torch.tensor([4.0, -4.0]))
    opt = SignSGD([p, q], lr=lr)
    p.grad = torch.tensor([[1e-8, -3.0, 0.0], [250.0, -1e-3, 7.0]])
    q.grad = torch.tensor([-0.5, 2.0])
    p0, q0 = p.detach().clone(), q.detach().clone()
    opt.step()
    assert torch.equal(p.detach() - p0, -lr * torch.sign(p.grad))  # the magnitude of the gradient is ignored
    assert torch.equal(q.detach() - q0, torch.tensor([lr, -lr]))
    assert p.detach()[0, 2] == p0[0, 2]  # zero gradient: no move


def test_sign_sgd_momentum_follows_the_sign_of_the_average():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = SignSGD([p], lr=1.0, momentum=0.9)
    p.grad = torch.tensor([1.0])
    opt.step()
    assert p.item() == -1.0
    p.grad = torch.tensor([-0.5])  # buffer 0.9 * 1 + 0.1 * -0.5 > 0: still a step down
    opt.step()
    assert p.item() == -2.0
    with pytest.raises(ValueError, match="lr"):
        SignSGD([p], lr=0.0)


def test_channels_last_is_the_cpu_default_and_one_channel_batches_are_restrided():
    """channels_last measured ~1.3x faster on CPU (docs/performance.md); a one-channel batch must be
    NHWC-strided too, which ``contiguous(memory_format=...)`` would silently skip."""
    trainer = Trainer({"dataset": "digits", "filters": [4, 8], "max_train_samples": 64, "device": "cpu",
                       "augment": False, "epochs": 1})
    assert trainer.channels_last
    conv = next(p for p in trainer.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, _ = next(trainer._batches())
    assert x.shape[1] == 1 and x.stride()[1] == 1  # NHWC: the channel is the innermost dimension
    off = Trainer({"dataset": "digits", "filters": [4, 8], "max_train_samples": 64, "device": "cpu",
                   "augment": False, "epochs": 1, "channels_last": False})
    assert not off.channels_last and next(off._batches())[0].is_contiguous()


def test_a_plain_run_reports_exactly_the_declared_epoch_metrics():
    """``EPOCH_METRICS`` (what the families' metrics start from) is what ``fit`` reports, no more, no less."""
    from trainables.core.metric_names import EPOCH_METRICS, TEST_METRICS
    from trainables.families import FAMILIES

    result = train({"dataset": "digits", "filters": [8, 16], "epochs": 2, "batch_size": 64, "device": "cpu"})
    first, last = result.history
    assert set(first) - {"epoch"} == set(EPOCH_METRICS)
    assert set(last) - {"epoch"} == set(EPOCH_METRICS) | set(TEST_METRICS)
    assert FAMILIES["optimization"].metrics({"dataset": "digits"})[:len(EPOCH_METRICS)] == EPOCH_METRICS
