"""CPU training knobs for the core, each against the minimal hand-written loop in the same run.

Every variant trains the Fashion-MNIST CNN of ``bench/fashion_cnn.py`` (16-32-64 filters, batch 128,
SGD + Nesterov) on the same in-memory tensors from the same initial weights. The baseline is
``raw_epoch`` of ``bench/core_vs_raw.py`` (fp32, contiguous, torch's default SGD). Each repetition
times one epoch of every variant with a raw epoch right before or after it (order flipped every
repetition), so each knob's ratio (variant / raw, samples per second) compares epochs seconds apart
on a shared, noisy machine. Variants: the core in NCHW fp32 (the CPU default until channels_last
measured faster), channels_last (now the default), bfloat16 autocast, both, foreach and fused SGD,
``torch.compile`` (all but the layout and precision variants in NCHW fp32). Evaluation: samples/s of ``evaluate``
at several batch sizes, under ``inference_mode`` (the core's) and ``no_grad``. A variant that
changes numerics (bf16) also reports its validation accuracy after the timed epochs.

    python bench/core_speed.py [--samples 4096] [--reps 5] [--threads 1] [--quick] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402
from core_vs_raw import pick_dataset, raw_epoch  # noqa: E402
from report import save_result  # noqa: E402

from trainables.core import Trainer  # noqa: E402
from trainables.core.robustness import make_batch_loss  # noqa: E402
from trainables.core.trainer import build_network, evaluate, evaluate_split  # noqa: E402

BASE = {"filters": [16, 32, 64], "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
        "nesterov": True, "weight_decay": 5e-4, "scheduler": "none", "augment": False, "device": "cpu",
        "seed": 0, "epochs": 1000, "channels_last": False, "amp": False}

# name -> (config overrides, optimizer kwargs, compile)
VARIANTS = {
    "NCHW fp32 (the old CPU default)": ({}, {}, False),
    "channels_last (the CPU default)": ({"channels_last": True}, {}, False),
    "bf16 autocast": ({"amp": True}, {}, False),
    "channels_last + bf16 (amp: true)": ({"channels_last": True, "amp": True}, {}, False),
    "foreach SGD": ({}, {"foreach": True}, False),
    "fused SGD": ({}, {"fused": True}, False),
    "torch.compile": ({}, {}, True),
}


def make_variant(name: str, dataset: str, samples: int, data=None):
    overrides, opt_kwargs, compile_ = VARIANTS[name]
    trainer = Trainer({**BASE, "dataset": dataset, "max_train_samples": samples, **overrides}, data=data)
    if opt_kwargs:
        cfg = trainer.cfg
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                            nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, **opt_kwargs)
    if compile_:
        compiled = torch.compile(trainer.model)
        trainer.batch_loss = make_batch_loss(trainer.cfg, compiled, trainer.loss_fn)
    return trainer


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=None, help="default: fashion_mnist when installed, else digits")
    p.add_argument("--samples", type=int, default=4096, help="training samples per timed epoch")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (a 1-CPU trial gets 1)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first call compiles C++)")
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to time (default: all)")
    p.add_argument("--quick", action="store_true", help="few samples and repetitions (a smoke test)")
    p.add_argument("--json", default=str(REPO / "bench" / "results" / "core_speed.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.reps = min(args.samples, 1024), min(args.reps, 2)
    torch.set_num_threads(args.threads)
    dataset = pick_dataset(args.dataset)
    names = [n for n in (args.only or VARIANTS) if not (args.no_compile and VARIANTS[n][2])]

    first = make_variant("NCHW fp32 (the old CPU default)", dataset, args.samples)
    data = first.data
    x, y = data.train.x, data.train.y
    torch.manual_seed(0)
    raw_model = build_network(first.cfg, data)
    raw_model.load_state_dict(first.model.state_dict())
    raw_opt = torch.optim.SGD(raw_model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    trainers = {"NCHW fp32 (the old CPU default)": first}
    warmup = {}
    for n in names:
        t0 = time.perf_counter()
        trainers.setdefault(n, make_variant(n, dataset, args.samples, data=data))
        trainers[n].train_epoch()  # warm-up (and, for torch.compile, the compilation)
        warmup[n] = time.perf_counter() - t0
    raw_epoch(raw_model, raw_opt, x, y, BASE["batch_size"], gen)
    print(f"dataset={dataset} samples/epoch={len(y)} threads={torch.get_num_threads()} reps={args.reps}; "
          f"warm-up epoch s: " + ", ".join(f"{n} {s:.1f}" for n, s in warmup.items()), flush=True)

    def rate(fn) -> float:
        t0 = time.perf_counter()
        n = fn()
        return n / (time.perf_counter() - t0)

    ratios: dict[str, list[float]] = {n: [] for n in names}
    speeds: dict[str, list[float]] = {n: [] for n in names + ["raw"]}
    for rep in range(args.reps):
        for n in names:
            def core(t=trainers[n]):
                return t.train_epoch()[2]

            def raw():
                return raw_epoch(raw_model, raw_opt, x, y, BASE["batch_size"], gen)

            if rep % 2 == 0:
                c, r = rate(core), rate(raw)
            else:
                r, c = rate(raw), rate(core)
            ratios[n].append(c / r)
            speeds[n].append(c)
            speeds["raw"].append(r)
        print(f"  rep {rep + 1}: " + "  ".join(f"{n} {ratios[n][-1]:.2f}" for n in names), flush=True)

    train_result = {}
    print("\ntraining samples/s, variant / minimal loop (median of per-repetition ratios; target >= 1.2):")
    for n in names:
        med = statistics.median(ratios[n])
        train_result[n] = {"ratio": med, "samples_per_s": statistics.median(speeds[n]), "warmup_s": warmup[n]}
        print(f"  {n:24s} {med:5.2f}x   {statistics.median(speeds[n]):7.0f} samples/s   "
              f"(warm-up epoch {warmup[n]:.1f} s)")
    print(f"  {'minimal loop':24s} 1.00x   {statistics.median(speeds['raw']):7.0f} samples/s")

    # numerics of the variants that change them: validation accuracy after the same timed epochs
    acc = {}
    for n in names:
        _, acc[n] = evaluate(trainers[n].model, data.val, 1024, autocast=trainers[n].autocast())
    _, acc["minimal loop"] = evaluate(raw_model, data.val, 1024)
    print("validation accuracy after the timed epochs: " + ", ".join(f"{n} {a:.3f}" for n, a in acc.items()))

    # evaluation: batch size and inference_mode vs no_grad, on the validation split
    model = first.model
    eval_result = {}
    plain_evaluate = getattr(evaluate_split, "__wrapped__", evaluate_split)  # without its inference_mode decorator

    def eval_rate(bs: int, mode) -> float:
        with mode():
            t0 = time.perf_counter()
            plain_evaluate(model, data.val, bs)
            return len(data.val) / (time.perf_counter() - t0)

    sizes = [256, 1024, 4096]
    eval_rate(1024, torch.inference_mode)  # warm-up
    runs = {(bs, m.__name__): [] for bs in sizes for m in (torch.inference_mode, torch.no_grad)}
    for rep in range(max(3, args.reps)):
        for bs in (sizes if rep % 2 == 0 else sizes[::-1]):
            for m in ((torch.inference_mode, torch.no_grad) if rep % 2 == 0 else (torch.no_grad, torch.inference_mode)):
                runs[(bs, m.__name__)].append(eval_rate(bs, m))
    ref = statistics.median(runs[(1024, "inference_mode")])
    print(f"\nevaluation samples/s on {len(data.val)} validation samples (vs batch 1024 under inference_mode, "
          "the core's default):")
    for (bs, m), v in runs.items():
        med = statistics.median(v)
        eval_result[f"{m} batch {bs}"] = {"samples_per_s": med, "ratio": med / ref}
        print(f"  {m:15s} batch {bs:5d}: {med:8.0f} samples/s  {med / ref:5.2f}x")

    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dataset": dataset,
              "samples_per_epoch": len(y), "threads": torch.get_num_threads(), "reps": args.reps,
              "train": train_result, "val_acc": acc, "eval": eval_result, "target": 1.2}
    save_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
