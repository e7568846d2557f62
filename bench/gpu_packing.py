"""GPU figures (run on a GPU machine, never in CI): bf16 + channels_last, and trials packed on one GPU.

1. ``precision``: CIFAR-10 ResNet-18 (the core's ``resnet18``, batch 256, augmentation on) epoch
   time in fp32 (contiguous) against bf16 autocast + channels_last (the core's CUDA default),
   alternating, medians of ``--reps`` epochs after one warm-up epoch each; ratio printed.
2. ``packing``: 1, 2, 4, 8 trials at once on the same GPU, each its own process (as a Ray trial
   actor with ``resources.gpus: 1/N`` is), started together behind a barrier; aggregate training
   samples/s over the slowest trial's time and its ratio to one trial (target >= 2.5x at 4), plus
   each trial's peak GPU memory (``torch.cuda.max_memory_allocated``), which decides how many fit
   (Ray's fractional GPUs are bookkeeping only; nothing stops an OOM).

The CIFAR-10 files must be in the data dir (``--data-dir`` or $ROBUST_SEARCH_DATA, the extracted
``cifar-10-batches-py``): GPU machines often cannot download. ``--dataset fashion_mnist`` runs
the same measurements without CIFAR-10. Results go to ``bench/results/gpu_packing.json`` with the
device name.

    python bench/gpu_packing.py [precision] [packing] [--trials 1 2 4 8] [--epochs 2] [--data-dir DIR]
    python bench/gpu_packing.py --device cpu --quick   # a smoke test of the code path on a CPU
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


def config(args, **over) -> dict:
    cfg = {"dataset": args.dataset, "model": args.model, "batch_size": args.batch_size, "optimizer": "sgd",
           "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "scheduler": "none", "augment": True,
           "epochs": 1000, "device": args.device, "seed": 0, "data_dir": args.data_dir,
           "max_train_samples": args.samples}
    return {**cfg, **over}


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def precision(args) -> dict:
    from trainables.core import Trainer

    variants = {"fp32": {"amp": False, "channels_last": False}, "bf16 + channels_last": {"amp": True,
                                                                                         "channels_last": True}}
    trainers = {}
    for name, over in variants.items():
        trainers[name] = Trainer(config(args, **over), data=next(iter(trainers.values())).data if trainers else None)
        trainers[name].train_epoch()  # warm-up (cuDNN autotuning, allocator)
    times = {n: [] for n in variants}
    for rep in range(args.reps):
        for n in (list(variants) if rep % 2 == 0 else list(variants)[::-1]):
            sync(args.device)
            t0 = time.perf_counter()
            trainers[n].train_epoch()
            sync(args.device)
            times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    ratio = med["fp32"] / med["bf16 + channels_last"]
    print(f"{args.model} on {args.dataset}: epoch of {len(trainers['fp32'].data.train)} images: fp32 {med['fp32']:.2f} s, "
          f"bf16 + channels_last {med['bf16 + channels_last']:.2f} s -> {ratio:.2f}x faster")
    return {"epoch_s": med, "speedup": ratio}


def packed_trial(cfg: dict, epochs: int, barrier, out) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from trainables.core import Trainer

    trainer = Trainer(cfg)
    trainer.train_epoch()  # warm-up
    cuda = cfg["device"].startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    barrier.wait()
    t0 = time.perf_counter()
    seen = sum(trainer.train_epoch()[2] for _ in range(epochs))
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    out.put((seen, time.perf_counter() - t0, peak))


def packing(args) -> dict:
    ctx = mp.get_context("spawn")
    res = {}
    for n in args.trials:
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=packed_trial, args=(config(args), args.epochs, barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        rows = [out.get() for _ in procs]
        for p in procs:
            p.join()
        rate = sum(r[0] for r in rows) / max(r[1] for r in rows)
        res[n] = {"samples_per_s": rate, "peak_mem_gib_per_trial": max(r[2] for r in rows) / 2**30}
        print(f"  {n} trial(s) on one GPU: {rate:8.0f} samples/s aggregate, "
              f"peak {res[n]['peak_mem_gib_per_trial']:.2f} GiB per trial", flush=True)
    one = res[min(res)]["samples_per_s"]
    for r in res.values():
        r["ratio_vs_one"] = r["samples_per_s"] / one
    print("aggregate vs one trial: " + ", ".join(f"{n}: {r['ratio_vs_one']:.2f}x" for n, r in res.items())
          + "   (target >= 2.5x at 4)")
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="*", help="precision and/or packing (default: both)")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--samples", type=int, default=None, help="training images per epoch (default: all)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per packed trial")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--trials", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="digits, tiny CNN, 1 and 2 trials (code-path check)")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "gpu_packing.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.model, args.samples, args.reps, args.epochs, args.trials = "digits", "cnn", 512, 1, 1, [1, 2]
    what = args.what or ["precision", "packing"]
    import torch

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {device}, torch {torch.__version__}", flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device, "dataset": args.dataset,
              "model": args.model, "batch_size": args.batch_size}
    if "precision" in what:
        result["precision"] = precision(args)
    if "packing" in what:
        result["packing"] = packing(args)
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
