"""Acceptance experiment: PGD adversarial training buys robustness on Fashion-MNIST.

A standard model and a PGD-AT model (same CNN, same data, same epochs) are evaluated on
the first ``--eval-samples`` images of the TEST split at eps = 0.1: clean, FGSM and PGD-20
accuracy with our attacks, plus torchattacks' PGD-20 and APGD as an independent check (a
robustness gain that torchattacks cannot confirm would be gradient masking, not robustness).
Acceptance: PGD-AT improves PGD-20 accuracy by at least 20 points.

    python bench/adversarial_fashion.py [--epochs 4] [--train-samples 20000] [--eval-samples 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.core import train  # noqa: E402
from trainables.core.attacks import fgsm, pgd, robust_accuracy  # noqa: E402
from trainables.core.trainer import build_data  # noqa: E402
from trainables.independent_check import gradient_masking_flag, independent_check  # noqa: E402

COLUMNS = ("clean", "fgsm", "pgd20", "ta_pgd20", "ta_apgd")


def evaluate(model, x, y, eps: float, batch_size: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    out = {
        "clean": robust_accuracy(model, (x, y), None, batch_size),
        "fgsm": robust_accuracy(model, (x, y), partial(fgsm, eps=eps), batch_size),
        "pgd20": robust_accuracy(model, (x, y), partial(pgd, eps=eps, steps=20, generator=gen), batch_size),
    }
    ind = independent_check(model, x, y, eps, steps=20, batch_size=batch_size)
    out.update(ta_pgd20=ind["pgd_acc"], ta_apgd=ind["apgd_acc"])
    out["masking"] = gradient_masking_flag(out["pgd20"], min(ind["pgd_acc"], ind["apgd_acc"]))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-samples", type=int, default=20000)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--adv-steps", type=int, default=5, help="PGD steps when crafting training examples")
    p.add_argument("--filters", type=int, nargs="+", default=[16, 32])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)

    # a small validation split: it is evaluated every epoch, and model selection is not the point here
    base = {"dataset": "fashion_mnist", "data_dir": args.data_dir, "max_train_samples": args.train_samples,
            "val_fraction": 0.02, "epochs": args.epochs, "filters": args.filters, "lr": args.lr, "seed": args.seed,
            "device": "cpu"}
    runs = {"standard": {}, "pgd_at": {"adv_mode": "pgd", "adv_eps": args.eps, "adv_steps": args.adv_steps}}
    t_start = time.perf_counter()
    results, timing = {}, {}
    for name, extra in runs.items():
        t0 = time.perf_counter()
        r = train({**base, **extra}, on_epoch=lambda m, _t, name=name: print(
            f"  [{name}] epoch {m['epoch']}: train_acc {m['train_acc']:.3f} val_acc {m['val_acc']:.3f} "
            f"({m['epoch_time']:.0f}s)", flush=True))
        t1 = time.perf_counter()
        test = build_data(r.config, torch.device("cpu")).test
        x, y = test.x[: args.eval_samples], test.y[: args.eval_samples]
        results[name] = evaluate(r.model.eval(), x, y, args.eps, batch_size=500)
        timing[name] = (t1 - t0, time.perf_counter() - t1)
        print(f"  [{name}] train {timing[name][0]:.0f}s, eval {timing[name][1]:.0f}s", flush=True)
    wall = time.perf_counter() - t_start

    print(f"\nFashion-MNIST, eps={args.eps}, cnn filters={tuple(args.filters)}, {args.epochs} epochs on "
          f"{args.train_samples} train samples, PGD-AT with {args.adv_steps} steps; "
          f"{len(y)} test samples (accuracy, %)")
    print(f"{'model':<10}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'masking?':>10}")
    for name, res in results.items():
        print(f"{name:<10}" + "".join(f"{100 * res[c]:>10.1f}" for c in COLUMNS) + f"{str(res['masking']):>10}")
    gain = 100 * (results["pgd_at"]["pgd20"] - results["standard"]["pgd20"])
    print(f"PGD-20 improvement: {gain:+.1f} points ({'PASS' if gain >= 20 else 'FAIL'}: >= 20 needed); "
          f"wall time {wall:.0f}s")
    return {"results": results, "gain_points": gain, "wall_s": wall}


if __name__ == "__main__":
    main()
