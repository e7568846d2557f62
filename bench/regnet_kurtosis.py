"""What each kurtosis penalty does: F_k x {linear, abs, square} on Fashion-MNIST (covariance loss, one seed).

Same CNN, data and budget as bench/regnet_fashion.py. For each run: clean test accuracy and the gaussianity of the
test latents (mean kurtosis, mean skewness, histogram RMSE against N(mu_T, sigma_T)). The linear penalty (as
printed in the thesis) rewards K -> 1; abs and square aim at K = 3.

    nice -n 10 python bench/regnet_kurtosis.py [--factors 0 0.2 3000] [--penalties linear abs square]

Writes bench/results/regnet_kurtosis.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.core import TrainConfig, train  # noqa: E402
from trainables.core.data import DataBundle, Split  # noqa: E402
from trainables.core.gaussian_head import gaussianity_metrics, latents  # noqa: E402
from trainables.core.trainer import build_data  # noqa: E402


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factors", type=float, nargs="+", default=[0.0, 0.2, 3000.0])
    p.add_argument("--penalties", nargs="+", default=["linear", "abs", "square"])
    p.add_argument("--mu-t", type=float, default=10.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=10000)
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "regnet_kurtosis.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = {"dataset": "fashion_mnist", "max_train_samples": args.train_samples, "val_fraction": 0.02,
            "epochs": args.epochs, "batch_size": 200, "model": "cnn", "filters": [16, 32], "optimizer": "adam",
            "lr": 1e-3, "weight_decay": 0.0, "scheduler": "cosine", "device": "cpu", "head": "gaussian",
            "loss": "none", "regnet_loss": "covariance", "mu_t": args.mu_t}
    data = build_data(TrainConfig.from_dict(base), torch.device("cpu"))
    data = DataBundle(data.info, data.train, data.val, Split(data.test.x[: args.test_samples],
                                                             data.test.y[: args.test_samples]), data.source)
    runs = [(f, pen) for f in args.factors for pen in (args.penalties if f > 0 else ["-"])]
    rows, t_start = [], time.perf_counter()
    for factor, penalty in runs:
        t0 = time.perf_counter()
        extra = {"kurtosis_factor": factor} | ({"kurtosis_penalty": penalty} if factor > 0 else {})
        r = train({**base, **extra}, data=data)
        z = latents(r.model, data.test)
        row = {"kurtosis_factor": factor, "kurtosis_penalty": penalty, "test_acc": r.final["test_acc"],
               **gaussianity_metrics(z, data.test.y, args.mu_t, prefix="test_"), "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"F_k {factor:<7g} {penalty:<7} test_acc {row['test_acc']:.4f}  kurtosis {row['test_kurtosis_mean']:.2f}  "
              f"skew {row['test_skew_mean']:+.2f}  hist RMSE {row['test_hist_rmse']:.4f}  ({row['seconds']:.0f}s)",
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": base, "runs": rows, "wall_s": time.perf_counter() - t_start}, indent=1))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
