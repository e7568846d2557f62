"""Epochs to a good model: TPE + ASHA (the service's default) against a random search without early stopping.

A Fashion-MNIST study (CNN 16-32-64, a 2048-image training subset so an epoch takes about a second
or two on one core, 2040 validation images): optimizer, learning rate, momentum, weight decay, BatchNorm and
activation searched. Both arms run through the service (``start_search``, in one process, one Ray
start), same space, same trial count (64 by default) and epoch cap (4):
- ``random``: ``sampler: random``, scheduler none: every trial runs every epoch;
- ``tpe_asha``: ``sampler: tpe``, ASHA (grace 1, reduction factor 2).
Every reported epoch is read back from MLflow (per-epoch ``val_acc`` with its timestamp), in
reporting order, into a best-so-far curve over epochs consumed. Printed: the random search's
best and total epochs, and the epochs TPE + ASHA consumed until its best-so-far came within
0.5 points of that best (target <= 25 % of the random search's epochs). The curves go to a PNG.

    nice -n 10 python bench/search_efficiency.py [--trials 64] [--epochs 4] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from report import save_result  # bench/ is the script's folder, on sys.path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STUDY = """\
name: efficiency_{arm}
family: optimization
dataset: {dataset}
objective: {{metric: val_acc, mode: max}}
budget: {{num_samples: {trials}, max_epochs: {epochs}, grace_period: 1, reduction_factor: 2, scheduler: {scheduler}}}
resources: {{cpus: 1, gpus: 0}}
fixed:
  max_train_samples: {samples}
  val_fraction: {val_fraction}
  model: cnn
  filters: [16, 32, 64]
  batch_size: 128
  scheduler: cosine
  augment: false
search:
  optimizer: {{type: choice, values: [sgd, adam]}}
  lr: {{type: loguniform, low: 1.0e-4, high: 0.5}}
  momentum: {{type: uniform, low: 0.5, high: 0.99, when: {{optimizer: sgd}}}}
  weight_decay: {{type: loguniform, low: 1.0e-6, high: 1.0e-2}}
  batchnorm: {{type: choice, values: [true, false]}}
  activation: {{type: choice, values: [relu, gelu, silu]}}
seed: {seed}
sampler: {sampler}
"""


def epoch_log(uri: str, parent_run_id: str) -> list[tuple[int, str, int, float]]:
    """Every reported epoch: (timestamp ms, trial run id, epoch, val_acc), in reporting order."""
    from records import schema as tracking
    from records import writer

    client = writer.client_for(uri)
    rows = []
    for run in tracking.child_runs(client, client.get_run(parent_run_id)):
        for m in client.get_metric_history(run.info.run_id, "val_acc"):
            rows.append((m.timestamp, run.info.run_id, m.step, m.value))
    return sorted(rows)


def best_so_far(rows) -> list[tuple[int, float]]:
    """(epochs consumed, best val_acc so far) after each reported epoch."""
    out, best = [], float("-inf")
    for i, (_, _, _, v) in enumerate(rows, 1):
        best = max(best, v)
        out.append((i, best))
    return out


def run_arm(arm: str, args, tmp: Path, dataset: str) -> dict:
    from search.runner import start_search

    sampler, scheduler = ("random", "none") if arm == "random" else ("tpe", "asha")
    study = tmp / f"{arm}.yaml"
    study.write_text(STUDY.format(arm=arm, dataset=dataset, trials=args.trials, epochs=args.epochs,
                                  scheduler=scheduler, samples=args.samples, val_fraction=args.val_fraction,
                                  seed=args.seed, sampler=sampler))
    uri = f"sqlite:///{tmp}/mlflow.db"
    t0 = time.perf_counter()
    out = start_search(study, tracking_uri=uri, runs_dir=tmp / "runs", name=arm, quiet=True)
    seconds = time.perf_counter() - t0
    curve = best_so_far(epoch_log(uri, out.parent_run_id))
    print(f"{arm}: {len(out.table)} trials, {curve[-1][0]} epochs, best val_acc {curve[-1][1]:.4f}, "
          f"{seconds:.0f} s", flush=True)
    return {"curve": curve, "epochs": curve[-1][0], "best": curve[-1][1], "seconds": seconds}


def plot(res: dict, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, label in (("random", "random search, no early stopping"), ("tpe_asha", "TPE + ASHA (search run)")):
        xs, ys = zip(*res[arm]["curve"])
        ax.step(xs, ys, where="post", label=label)
    ax.axhline(target, color="gray", linestyle=":", label="random best - 0.5 points")
    ax.set_xlabel("epochs consumed")
    ax.set_ylabel("best validation accuracy so far")
    lo = min(min(y for _, y in res[a]["curve"][len(res[a]["curve"]) // 10:]) for a in res)
    ax.set_ylim(max(lo - 0.01, 0), None)
    ax.legend(loc="lower right")
    ax.set_title("Fashion-MNIST CNN: best-so-far vs epochs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--samples", type=int, default=2048, help="training images per epoch")
    p.add_argument("--val-fraction", type=float, default=0.034, help="of the 60000 training images (2040)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default=None, help="default: fashion_mnist when installed, else digits")
    p.add_argument("--quick", action="store_true", help="8 trials x 2 epochs on 1024 images (a smoke test)")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "search_efficiency.json"))
    p.add_argument("--png", default=str(REPO / "bench" / "results" / "search_efficiency.png"))
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.samples = 8, 2, 1024
    sys.path.insert(0, str(REPO / "bench"))
    from core_vs_raw import pick_dataset

    from search.cluster import init_ray, quiet_libraries

    dataset = pick_dataset(args.dataset)
    quiet_libraries()
    init_ray(None)
    res = {}
    with tempfile.TemporaryDirectory(prefix="search_efficiency_") as d:
        for arm in ("random", "tpe_asha"):
            res[arm] = run_arm(arm, args, Path(d), dataset)
    target = res["random"]["best"] - 0.005
    hit = next((n for n, best in res["tpe_asha"]["curve"] if best >= target), None)
    share = hit / res["random"]["epochs"] if hit else float("inf")
    print(f"\nrandom search: best {res['random']['best']:.4f} after {res['random']['epochs']} epochs "
          f"({args.trials} trials x {args.epochs})")
    print(f"TPE + ASHA: best {res['tpe_asha']['best']:.4f} in {res['tpe_asha']['epochs']} epochs; within 0.5 points "
          f"({target:.4f}) after " + (f"{hit} epochs = {share:.1%} of the random search's (target <= 25 %)" if hit
                                      else "never"))
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        plot(res, target, Path(args.png))
        print(f"curves: {args.png}")
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dataset": dataset, "trials": args.trials,
              "max_epochs": args.epochs, "samples": args.samples, "random_best": res["random"]["best"],
              "random_epochs": res["random"]["epochs"], "tpe_asha_best": res["tpe_asha"]["best"],
              "tpe_asha_epochs": res["tpe_asha"]["epochs"], "tpe_asha_epochs_to_target": hit,
              "share_of_random_epochs": share, "target_share": 0.25,
              "seconds": {a: r["seconds"] for a, r in res.items()}, "curves": {a: r["curve"] for a, r in res.items()}}
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
