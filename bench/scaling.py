"""Aggregate training throughput on one machine: 1 or 2 concurrent CPU trials, and threads per trial.

Layouts (trials x torch threads each): 1x1, 1x2, 2x1 by default. Each trial is its own process
(as a Ray trial actor is), trains the core's Fashion-MNIST CNN (``bench/core_speed.py``'s config)
for ``--epochs`` epochs on a ``--samples`` subset, and waits at a barrier after its data and model
are ready, so start-up is not timed. Aggregate samples/s = all trials' samples / the time from the
barrier to the last trial's end. Layouts alternate, order flipped every repetition; printed are
the medians and each layout's ratio to 1x1.

In a search, the trial's thread count is the CPUs Ray assigns to it: ``trainables/adapter.py``
calls ``torch.set_num_threads(resources.cpus)``; ``resources.cpus`` in the study sets it, and the
number of trials at once is the cluster's CPUs // resources.cpus (or ``budget.max_concurrent``).

    python bench/scaling.py [--layouts 1x1 1x2 2x1] [--epochs 2] [--samples 4096] [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

from report import save_result  # bench/ is the script's folder, on sys.path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def trial(threads: int, cfg: dict, epochs: int, barrier, out) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from trainables.core import Trainer

    torch.set_num_threads(threads)
    trainer = Trainer(cfg)
    trainer.train_epoch()  # warm-up: first-call kernel set-up is not what a long trial pays per epoch
    barrier.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    seen = sum(trainer.train_epoch()[2] for _ in range(epochs))
    out.put((seen, time.perf_counter(), time.process_time() - c0, t0))


def run_layout(trials: int, threads: int, cfg: dict, epochs: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(trials + 1), ctx.Queue()
    procs = [ctx.Process(target=trial, args=(threads, cfg, epochs, barrier, out)) for _ in range(trials)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.perf_counter()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    end = max(r[1] for r in results)
    seen = sum(r[0] for r in results)
    return {"samples_per_s": seen / (end - start), "cpu_s": sum(r[2] for r in results), "wall_s": end - start}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layouts", nargs="+", default=["1x1", "1x2", "2x1"], help="TRIALSxTHREADS")
    p.add_argument("--dataset", default=None, help="default: fashion_mnist when installed, else digits")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--channels-last", action="store_true", help="train channels_last (see core_speed.py)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "scaling.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.reps, args.epochs = min(args.samples, 1024), 1, 1
    from core_speed import BASE
    from core_vs_raw import pick_dataset

    cfg = {**BASE, "dataset": pick_dataset(args.dataset), "max_train_samples": args.samples,
           "channels_last": args.channels_last}
    layouts = [tuple(int(v) for v in s.split("x")) for s in args.layouts]
    runs: dict[str, list[dict]] = {s: [] for s in args.layouts}
    for rep in range(args.reps):
        for (n, t), name in (zip(layouts, args.layouts) if rep % 2 == 0 else reversed(list(zip(layouts, args.layouts)))):
            runs[name].append(run_layout(n, t, cfg, args.epochs))
        print(f"  rep {rep + 1}: " + "  ".join(f"{k} {v[-1]['samples_per_s']:.0f}" for k, v in runs.items()),
              flush=True)
    ref = statistics.median(r["samples_per_s"] for r in runs[args.layouts[0]])
    out = {}
    print(f"\naggregate training samples/s ({cfg['dataset']} CNN, {args.samples} samples x {args.epochs} epochs "
          f"per trial, medians of {args.reps}); ratio vs {args.layouts[0]}:")
    for name, rs in runs.items():
        med = statistics.median(r["samples_per_s"] for r in rs)
        per_cpu = statistics.median(r["samples_per_s"] * r["wall_s"] / r["cpu_s"] for r in rs)
        out[name] = {"samples_per_s": med, "ratio": med / ref, "samples_per_cpu_s": per_cpu}
        print(f"  {name:6s} (trials x threads): {med:7.0f} samples/s  {med / ref:5.2f}x   "
              f"({per_cpu:.0f} samples per CPU-second)")
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dataset": cfg["dataset"],
              "channels_last": args.channels_last, "layouts": out}
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    main()
