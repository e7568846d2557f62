"""RegNet vs cross-entropy on Fashion-MNIST: clean accuracy, FGSM eps in [0, 1] curves, mu_T, masking check.

Same encoder (the configurable CNN, filters 16-32, 256-d features), same data (first ``--train-samples``
training images), same budget (epochs, batch 200, Adam, cosine, no augmentation, as the thesis trained) for every model; only
the head and the loss differ: ``linear`` + cross-entropy, or ``gaussian`` + the RegNet covariance loss (+ F_k (K - 3)).

Clean accuracy on the first ``--test-samples`` TEST images; attacks on the first ``--eval-samples``:
- FGSM on each model's training loss (the thesis's attack, its eq. 2.6: RegNet's L_TOT of the attacked batch of
  500 images; the cross-entropy for the baseline) at each eps: *plain* accuracy (every sample, as the thesis
  reports) and *robust* accuracy (a sample counts only when clean and perturbed are both right);
- FGSM on the cross-entropy of the scores, the attack every other family reports;
- FGSM on the margin loss max_{j != y} s_j - s_y, which does not saturate: if FGSM-CE leaves a model
  untouched while FGSM-margin breaks it, the CE gradient is masked (it underflows for large mu_T);
- torchattacks APGD (CE and the scale-invariant DLR loss) at ``--apgd-eps`` on the first seed of each model,
  and our PGD-20 on the CE of the scores, flagged with ``gradient_masking_flag`` when ours is more than 2 points
  above the stronger APGD.

    nice -n 10 python bench/regnet_fashion.py [--seeds 6] [--epochs 3] [--mu-t 70] [--mu-ts 5 10 30 150]

Writes bench/results/regnet.json and bench/results/regnet_eps.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.core import TrainConfig, train  # noqa: E402
from trainables.core.attacks import eval_mode, pgd, robust_accuracy  # noqa: E402
from trainables.core.data import DataBundle, Split  # noqa: E402
from trainables.core.gaussian_head import gaussianity_metrics  # noqa: E402
from trainables.core.robustness import FGSM_LOSSES  # noqa: E402
from trainables.core.trainer import build_data  # noqa: E402
from trainables.independent_check import gradient_masking_flag  # noqa: E402

EPS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def predict(model, x, bs=1000) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return torch.cat([model(x[i : i + bs]).argmax(1) for i in range(0, len(x), bs)])


def eps_curves(model, x, y, eps_list=EPS) -> dict[str, list[float]]:
    """Plain and robust accuracy per eps for FGSM on the training loss (the thesis's), on the CE of the scores and
    on the margin loss."""
    clean_ok = predict(model, x) == y
    attacks = {"fgsm_training": lambda xb, yb, e: FGSM_LOSSES["training"](model, xb, yb, e),
               "fgsm": lambda xb, yb, e: FGSM_LOSSES["ce"](model, xb, yb, e),
               "fgsm_margin": lambda xb, yb, e: FGSM_LOSSES["margin"](model, xb, yb, e)}
    out: dict[str, list[float]] = {}
    for name, attack in attacks.items():
        plain, robust = [], []
        for e in eps_list:
            adv_ok = clean_ok if e == 0 else predict(model, attack(x, y, e)) == y
            plain.append(adv_ok.float().mean().item())
            robust.append((adv_ok & clean_ok).float().mean().item())
        out[f"{name}_plain"], out[f"{name}_robust"] = plain, robust
    return out


def apgd_check(model, x, y, eps: float, steps: int = 20) -> dict[str, float]:
    """torchattacks APGD-CE and APGD-DLR robust accuracy (counted like ours: clean and perturbed right)."""
    import importlib

    from trainables.core.torchvision_compat import torchvision  # noqa: F401 - must be imported before torchattacks

    torchattacks = importlib.import_module("torchattacks")

    out = {}
    clean_ok = predict(model, x) == y
    with torch.random.fork_rng(devices=[]), eval_mode(model):
        for loss in ("ce", "dlr"):
            torch.manual_seed(0)
            atk = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss=loss, seed=0)
            adv = torch.cat([atk(x[i : i + 500], y[i : i + 500]) for i in range(0, len(y), 500)])
            out[f"apgd_{loss}_robust"] = ((predict(model, adv) == y) & clean_ok).float().mean().item()
    return out


def base_config(args) -> dict:
    return {"dataset": "fashion_mnist", "data_dir": args.data_dir, "max_train_samples": args.train_samples,
            "val_fraction": 0.02, "epochs": args.epochs, "batch_size": 200, "model": "cnn", "filters": args.filters,
            "optimizer": "adam", "lr": args.lr, "weight_decay": 0.0, "scheduler": "cosine", "device": "cpu",
            "augment": False}


def regnet(mu_t: float, args) -> dict:
    return {"head": "gaussian", "loss": "none", "regnet_loss": "covariance", "mu_t": mu_t, "sigma_t": 1.0,
            "kurtosis_factor": args.kurtosis_factor, "kurtosis_penalty": args.kurtosis_penalty}


def mean_std(rows: list[list[float]]) -> tuple[list[float], list[float]]:
    cols = list(zip(*rows))
    return ([statistics.fmean(c) for c in cols], [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=10000)
    p.add_argument("--eval-samples", type=int, default=500, help="test images attacked")
    p.add_argument("--test-samples", type=int, default=2000, help="test images for the clean accuracy")
    p.add_argument("--filters", type=int, nargs="+", default=[16, 32])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mu-t", type=float, default=70.0, help="the main RegNet's target mean (the thesis's default)")
    p.add_argument("--mu-ts", type=float, nargs="*", default=[5, 10, 30, 150], help="extra mu_T, --sweep-seeds each")
    p.add_argument("--sweep-seeds", type=int, default=1)
    p.add_argument("--kurtosis-factor", type=float, default=0.2)
    p.add_argument("--kurtosis-penalty", default="linear")
    p.add_argument("--apgd-eps", type=float, default=0.1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "regnet.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    runs = [("ce", {"head": "linear", "loss": "cross_entropy"}, s) for s in range(args.seeds)]
    runs += [(f"regnet_mu{args.mu_t:g}", regnet(args.mu_t, args), s) for s in range(args.seeds)]
    runs += [(f"regnet_mu{m:g}", regnet(m, args), s) for m in args.mu_ts for s in range(args.sweep_seeds)]
    t_start = time.perf_counter()
    data = build_data(TrainConfig.from_dict(base_config(args)), torch.device("cpu"))  # once: same data for every run
    # The trainer measures test_acc on data.test at the last epoch: the first --test-samples test images.
    data = DataBundle(data.info, data.train, data.val, Split(data.test.x[: args.test_samples],
                                                             data.test.y[: args.test_samples]), data.source)
    test = data.test
    x, y = test.x[: args.eval_samples], test.y[: args.eval_samples]
    per_run = []
    for name, extra, seed in runs:
        t0 = time.perf_counter()
        r = train({**base_config(args), **extra, "seed": seed}, data=data)
        model = r.model.eval()
        row = {"name": name, "seed": seed, "val_acc": r.final["val_acc"], "test_acc": r.final["test_acc"],
               "train_seconds": time.perf_counter() - t0, **eps_curves(model, x, y)}
        if extra["head"] == "gaussian":
            with torch.no_grad():
                z = model.outputs(test.x).latent
            row.update(gaussianity_metrics(z, test.y, extra["mu_t"], prefix="test_"))
        if seed == 0:
            row.update(apgd_check(model, x, y, args.apgd_eps))
            gen = torch.Generator().manual_seed(0)
            row["pgd20_ce_robust"] = robust_accuracy(model, (x, y), partial(pgd, eps=args.apgd_eps, steps=20,
                                                                           generator=gen), 500)
            strongest = min(row["apgd_ce_robust"], row["apgd_dlr_robust"])
            row["masking_flag"] = gradient_masking_flag(row["pgd20_ce_robust"], strongest)
        row["seconds"] = time.perf_counter() - t0
        per_run.append(row)
        print(f"[{name} seed {seed}] test_acc {row['test_acc']:.4f}  fgsm-training plain " +
              " ".join(f"{v:.3f}" for v in row["fgsm_training_plain"]) + "  fgsm-ce plain " +
              " ".join(f"{v:.3f}" for v in row["fgsm_plain"]) + "  margin plain " +
              " ".join(f"{v:.3f}" for v in row["fgsm_margin_plain"]) +
              (f"  apgd ce/dlr {row['apgd_ce_robust']:.3f}/{row['apgd_dlr_robust']:.3f}" if seed == 0 else "") +
              f"  ({row['seconds']:.0f}s)", flush=True)

    summary = {}
    for name in dict.fromkeys(r["name"] for r in per_run):
        rows = [r for r in per_run if r["name"] == name]
        s = {"seeds": len(rows), "test_acc_mean": statistics.fmean(r["test_acc"] for r in rows),
             "test_acc_std": statistics.stdev([r["test_acc"] for r in rows]) if len(rows) > 1 else 0.0,
             "val_acc_mean": statistics.fmean(r["val_acc"] for r in rows)}
        for key in ("fgsm_training_plain", "fgsm_training_robust", "fgsm_plain", "fgsm_robust", "fgsm_margin_plain",
                    "fgsm_margin_robust"):
            s[f"{key}_mean"], s[f"{key}_std"] = mean_std([r[key] for r in rows])
        for key in ("test_kurtosis_mean", "test_skew_mean", "test_hist_rmse", "pgd20_ce_robust", "apgd_ce_robust",
                    "apgd_dlr_robust", "masking_flag"):
            vals = [r[key] for r in rows if key in r]
            if vals:
                s[key] = statistics.fmean(vals) if not isinstance(vals[0], bool) else any(vals)
        summary[name] = s
    wall = time.perf_counter() - t_start
    result = {"config": {**base_config(args), "eval_samples": args.eval_samples, "test_samples": args.test_samples,
                         "eps": EPS, "apgd_eps": args.apgd_eps,
                         "kurtosis_factor": args.kurtosis_factor, "kurtosis_penalty": args.kurtosis_penalty},
              "summary": summary, "runs": per_run, "wall_s": wall}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_name(f"{out.stem}_eps.png"))
    print_table(result)
    print(f"wall time {wall:.0f}s; wrote {out}")
    return result


def print_table(result: dict) -> None:
    summ = result["summary"]
    print(f"\n{'model':<16}{'seeds':>6}{'test acc':>16}" + "".join(f"{'e=' + format(e, 'g'):>13}" for e in EPS))
    for key, label in (("fgsm_training_plain", "FGSM-training-loss plain (the thesis's)"),
                       ("fgsm_plain", "FGSM-CE plain"), ("fgsm_robust", "FGSM-CE robust"),
                       ("fgsm_margin_plain", "FGSM-margin plain")):
        print(f"-- {label} accuracy (mean ± std over seeds)")
        for name, s in summ.items():
            acc = f"{100 * s['test_acc_mean']:.2f}±{100 * s['test_acc_std']:.2f}"
            print(f"{name:<16}{s['seeds']:>6}{acc:>16}" + "".join(
                f"{100 * m:>7.1f}±{100 * d:<5.1f}" for m, d in zip(s[f"{key}_mean"], s[f"{key}_std"])))
    print("-- independent check at eps", result["config"]["apgd_eps"], "(seed 0; robust accuracy)")
    for name, s in summ.items():
        if "apgd_ce_robust" in s:
            print(f"{name:<16} our PGD-20 (CE) {100 * s['pgd20_ce_robust']:.1f}  APGD-CE {100 * s['apgd_ce_robust']:.1f}  "
                  f"APGD-DLR {100 * s['apgd_dlr_robust']:.1f}  masking flag: {s.get('masking_flag')}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ, eps = result["summary"], result["config"]["eps"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, title in zip(axes, ("fgsm_training_plain", "fgsm_margin_plain", "fgsm_plain"),
                              ("FGSM on the training loss (thesis): plain acc.", "FGSM on margin loss: plain acc.",
                               "FGSM on CE of scores: plain acc.")):
        for name, s in summ.items():
            m, d = torch.tensor(s[f"{key}_mean"]), torch.tensor(s[f"{key}_std"])
            ax.plot(eps, m, marker="o", ms=3, label=f"{name} (n={s['seeds']})")
            ax.fill_between(eps, m - d, m + d, alpha=0.2)
        ax.set(title=title, xlabel="eps (pixel scale)", ylabel="accuracy", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fashion-MNIST: RegNet (Gaussian head, covariance loss) vs cross-entropy, same CNN and budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
