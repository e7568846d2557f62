"""The adversarial family's last-epoch additions: the independent check and the masking flag."""

from __future__ import annotations

import pytest

from trainables.adversarial import check_eps
from trainables.adversarial import final_metrics as independent_metrics
from trainables.core import TrainConfig, Trainer

TINY_AT = {"dataset": "digits", "filters": [8, 16], "epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.01,
           "adv_mode": "pgd", "adv_eps": 0.1, "adv_steps": 3, "eval_eps": [0.05, 0.1], "eval_pgd_steps": 5,
           "eval_samples": 200}


def test_check_eps_prefers_the_training_eps():
    assert check_eps(TrainConfig.from_dict(TINY_AT)) == 0.1
    assert check_eps(TrainConfig.from_dict({**TINY_AT, "adv_eps": 0.3})) == 0.1  # not evaluated: largest eval eps
    assert check_eps(TrainConfig.from_dict({k: v for k, v in TINY_AT.items() if not k.startswith(("adv_", "eval_"))})) == 0.0


def test_independent_metrics_on_a_trained_model():
    trainer = Trainer(TINY_AT)
    result = trainer.fit()
    extra = independent_metrics(trainer, result.final)
    assert extra["indep_eps"] == 0.1
    for key in ("indep_pgd_acc", "indep_apgd_acc"):
        assert 0.0 <= extra[key] <= result.final["clean_acc"] + 1e-9
    # APGD is at least as strong as a 5-step PGD would be: it does not find a *more* robust model.
    assert extra["indep_apgd_acc"] <= result.final["pgd_acc_eps0.1"] + 0.05
    assert extra["gradient_masking"] in (0.0, 1.0)


def test_no_check_without_an_eps():
    trainer = Trainer({k: v for k, v in TINY_AT.items() if not k.startswith(("adv_", "eval_"))})
    assert independent_metrics(trainer, {}) == {}


@pytest.mark.parametrize("ours,theirs,flag", [(0.50, 0.47, 1.0), (0.50, 0.49, 0.0)])
def test_masking_flag_in_metrics(monkeypatch, ours, theirs, flag):
    import trainables.independent_check as ic

    monkeypatch.setattr(ic, "independent_check", lambda *a, **k: {"pgd_acc": theirs, "apgd_acc": theirs + 0.01})
    trainer = Trainer({**TINY_AT, "max_train_samples": 64})
    assert independent_metrics(trainer, {"pgd_acc_eps0.1": ours})["gradient_masking"] == flag


def test_regnet_checks_the_largest_eps_up_to_0_3_and_adds_the_dlr_attack(monkeypatch):
    """One ``independent_metrics`` for both families: regnet's eps rule and its APGD-DLR enter the masking flag."""
    import trainables.independent_check as ic
    from trainables.regnet import check_eps as regnet_eps
    from trainables.regnet import final_metrics as regnet_final

    assert regnet_eps(TrainConfig.from_dict({**TINY_AT, "eval_eps": [0.1, 0.3, 0.5]})) == 0.3
    assert regnet_eps(TrainConfig.from_dict({**TINY_AT, "eval_eps": [0.5, 1.0]})) == 0.5
    seen = {}

    def fake(model, x, y, eps, **kw):
        seen.update(eps=eps, **kw)
        return {"clean_acc": 0.9, "pgd_acc": 0.6, "apgd_acc": 0.6, "apgd_dlr_acc": 0.1}

    monkeypatch.setattr(ic, "independent_check", fake)
    trainer = Trainer({**TINY_AT, "eval_eps": [0.1, 0.3, 0.5], "max_train_samples": 64})
    out = regnet_final(trainer, {"pgd_acc_eps0.3": 0.6})
    assert seen["eps"] == 0.3 and seen["dlr"] is True
    assert out["indep_apgd_dlr_acc"] == 0.1 and out["gradient_masking"] == 1.0  # only DLR exposes the masking
