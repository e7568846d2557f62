"""Training throughput: the core's ``Trainer.train_epoch`` against a minimal hand-written PyTorch loop.

Both train the same architecture (``build_model``, same initial weights) on the same in-memory
tensors with the same batch size, optimizer and loss; augmentation is off in the core and there
is none in the raw loop, and the core's scheduler is off (the raw loop has none). After one
warm-up epoch each, they run alternately, one epoch at a time, with the order flipped every
repetition so drifts in machine load hit both alike. Printed: each median (samples/s), the
ratio of the medians (core / raw; target >= 0.9) and the median of the per-repetition ratios,
which is steadier on a shared, noisy machine.

    python bench/core_vs_raw.py [--dataset fashion_mnist|digits] [--samples 4096] [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainables.core import DatasetNotFound, Trainer, load_data  # noqa: E402
from trainables.core.optim import OPTIMIZERS  # noqa: E402
from trainables.core.registry import build  # noqa: E402
from trainables.core.trainer import build_network  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def raw_epoch(model, optimizer, x, y, batch_size, generator) -> int:
    """The loop one would write by hand: shuffle, slice, forward, loss, backward, step."""
    model.train()
    perm = torch.randperm(len(y), generator=generator).to(x.device)
    for i in range(0, len(perm), batch_size):
        idx = perm[i : i + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(perm)


def pick_dataset(name: str | None) -> str:
    if name:
        return name
    try:
        load_data("fashion_mnist", max_train_samples=1)
        return "fashion_mnist"
    except DatasetNotFound:
        return "digits"


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=None, help="default: fashion_mnist when installed, else digits")
    p.add_argument("--samples", type=int, default=4096, help="training samples per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--filters", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--optimizer", default="sgd", choices=list(OPTIMIZERS))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default). 1 keeps a shared machine's noise low: "
                   "with other processes on the cores, OpenMP threads spin-wait and timings swing 3x")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="few samples and repetitions (a smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.reps = min(args.samples, 1024), min(args.reps, 3)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dataset = pick_dataset(args.dataset)
    device = torch.device(args.device)

    cfg = {"dataset": dataset, "filters": args.filters, "batch_size": args.batch_size, "optimizer": args.optimizer,
           "lr": 0.01, "weight_decay": 5e-4, "augment": False, "scheduler": "none", "max_train_samples": args.samples,
           "device": str(device), "seed": 0, "epochs": 1}
    trainer = Trainer(cfg)
    x, y = trainer.data.train.x, trainer.data.train.y  # the very same tensors for both loops

    torch.manual_seed(0)
    model = build_network(trainer.cfg, trainer.data).to(device)
    model.load_state_dict(trainer.model.state_dict())
    if trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build("optimizer", args.optimizer, trainer.cfg, model.parameters())  # the same optimizer
    generator = torch.Generator().manual_seed(0)
    autocast = trainer.autocast  # bf16 on CUDA for both, as the core does by default
    on_cpu = device.type == "cpu"

    def core():
        return trainer.train_epoch()[2]

    def raw():
        with autocast():
            return raw_epoch(model, optimizer, x, y, args.batch_size, generator)

    def timed(fn) -> tuple[float, float]:
        """(samples per wall-clock second, samples per CPU second of this process)."""
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        n = fn()
        sync(device)
        return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)

    print(f"dataset={dataset} train samples={len(y)} batch={args.batch_size} filters={args.filters} "
          f"optimizer={args.optimizer} device={device} threads={torch.get_num_threads()}", flush=True)
    timed(core), timed(raw)  # warm-up
    rates = {"core": [], "raw": []}  # (wall, cpu) per repetition
    for rep in range(args.reps):
        order = [("core", core), ("raw", raw)] if rep % 2 == 0 else [("raw", raw), ("core", core)]
        for name, fn in order:
            rates[name].append(timed(fn))
        (cw, cc), (rw, rc) = rates["core"][-1], rates["raw"][-1]
        print(f"  rep {rep + 1}: core {cw:8.0f}  raw {rw:8.0f} samples/s  ratio {cw / rw:.3f}"
              + (f"   (per CPU-second: core {cc:8.0f}  raw {rc:8.0f}  ratio {cc / rc:.3f})" if on_cpu else ""),
              flush=True)

    def medians(i):
        core_med = statistics.median(r[i] for r in rates["core"])
        raw_med = statistics.median(r[i] for r in rates["raw"])
        pairwise = statistics.median(c[i] / r[i] for c, r in zip(rates["core"], rates["raw"]))
        return core_med, raw_med, core_med / raw_med, pairwise

    core_med, raw_med, ratio, pairwise = medians(0)
    result = {"core_samples_per_s": core_med, "raw_samples_per_s": raw_med, "ratio": ratio,
              "median_pairwise_ratio": pairwise}
    print(f"core median: {core_med:.0f} samples/s")
    print(f"raw  median: {raw_med:.0f} samples/s")
    print(f"ratio core/raw (medians): {ratio:.3f}   median per-rep ratio: {pairwise:.3f}   (target >= 0.9)")
    if on_cpu:  # CPU time is what the work costs; wall time also counts other processes' turns on the cores
        core_cpu, raw_cpu, cpu_ratio, _ = medians(1)
        result["cpu_time_ratio"] = cpu_ratio
        print(f"per CPU-second: core {core_cpu:.0f}  raw {raw_cpu:.0f}  ratio {cpu_ratio:.3f}")
    return result


if __name__ == "__main__":
    main()
