"""Generalization measurements on Fashion-MNIST with corruption domains generated here (Fashion-MNIST-C-style).

Three parts, each through the core (``trainables.core.trainer`` / ``make_trainer``: what a search trial runs):

- ``matrix``: source -> target accuracy. Sources: Fashion-MNIST and its rotated domain;
  targets: Fashion-MNIST and seven corruption domains, each evaluated every epoch by ``eval_datasets``
  (the table is the last epoch's ``xdomain_acc_*``). The clean source's checkpoint is kept for ``finetune``.
- ``finetune``: from that checkpoint, fine-tune on k in {10, 50, 100} labelled samples per class of a target
  domain with the trunk frozen and with all but the last block frozen: target accuracy before / after.
- ``circle``: cross-entropy alone vs cross-entropy + lambda x Circle loss (m 0.25, gamma 256): clean, FGSM
  and PGD-10 accuracy at eps 0.1 (first 1000 validation images) and a UMAP of each model's features.

Also writes the clean source model's diagnostics (``analysis.diagnostics``). Results:
bench/results/generalization.json and PNGs under bench/results/generalization/.

    nice -n 10 python bench/generalization_fashion.py [matrix] [finetune] [circle] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.core import DatasetNotFound, train  # noqa: E402
from trainables.core.data import load_data  # noqa: E402
from trainables.core.run import make_trainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = RESULTS / "generalization"
JSON = RESULTS / "generalization.json"
SOURCE_CKPT = Path(tempfile.gettempdir()) / "robust-search-bench" / "fashion_source.pt"  # matrix -> finetune

# bench/fashion_cnn.py's 2-core recipe (92 % test accuracy in 5 epochs on all 54k images), on 20k images x 3 epochs.
BASE = {
    "dataset": "fashion_mnist", "model": "cnn", "filters": [16, 32, 64], "batch_size": 128, "optimizer": "sgd",
    "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "scheduler": "onecycle", "augment": False,
    "epochs": 3, "max_train_samples": 20000, "device": "cpu", "seed": 0, "eval_batch_size": 2000,
}
SOURCES = ["fashion_mnist", "fashion_mnist:rotate@3"]
TARGETS = ["fashion_mnist", "fashion_mnist:rotate@3", "fashion_mnist:shear@3", "fashion_mnist:translate@3",
           "fashion_mnist:gaussian_noise@3", "fashion_mnist:blur@3", "fashion_mnist:contrast@4", "fashion_mnist:invert"]
FINETUNE_TARGETS = ["fashion_mnist:rotate@4"]
KS = (10, 50, 100)
FREEZES = ("trunk", "all_but_last_block")
CIRCLE_WEIGHTS = (0.0, 0.01)
EPS = 0.1
FT_EPOCHS, FT_LR = 8, 0.05


def log(msg: str) -> None:
    print(msg, flush=True)


def save(results: dict, parts) -> None:
    """Merge this run's parts into the results file (parts may run in separate processes)."""
    (RESULTS / "generalization").mkdir(parents=True, exist_ok=True)
    merged = json.loads(JSON.read_text()) if JSON.exists() else {}
    for key in list(parts) + (["diagnostics"] if "matrix" in parts else []):
        if key in results:
            merged[key] = results[key]
    merged.setdefault("wall_s", {}).update(results.get("wall_s", {}))
    JSON.write_text(json.dumps(merged, indent=1))
    for part in parts:  # a copy per part: a concurrent writer of the merged file cannot lose it
        (RESULTS / "generalization" / f"{part}.json").write_text(json.dumps(results.get(part), indent=1))


def run_matrix(results: dict) -> None:
    from trainables.core.metric_names import xdomain_metric_name

    rows, walls = {}, {}
    for src in SOURCES:
        t0 = time.perf_counter()
        trainer = make_trainer({**BASE, "dataset": src, "eval_datasets": TARGETS})
        r = trainer.fit()
        walls[src] = round(time.perf_counter() - t0, 1)
        rows[src] = {t: round(r.final[xdomain_metric_name(t)], 4) for t in TARGETS}
        log(f"  {src:32s} " + " ".join(f"{v:.3f}" for v in rows[src].values()) + f"   ({walls[src]} s)")
        if src == "fashion_mnist":
            trainer.save_checkpoint(SOURCE_CKPT)
            diagnostics(r.model, results)
    results["matrix"] = {"sources": SOURCES, "targets": TARGETS, "accuracy": rows, "wall_s": walls,
                         "config": BASE, "note": "rows: training domain; columns: test split of each target domain; "
                         "corruptions generated here (Fashion-MNIST-C-style, not the published MNIST-C)"}


def diagnostics(model, results: dict) -> None:
    from analysis.diagnostics import from_predictions
    from trainables.core.predictions import collect

    domains = {t: load_data(t, split_seed=0).test for t in ["fashion_mnist", "fashion_mnist:rotate@3",
                                                             "fashion_mnist:invert"]}
    found = collect(model.eval(), domains, eps=EPS, pgd_steps=10, seed=0)
    results["diagnostics"] = from_predictions(found, FIGURES / "diagnostics", n_bins=10, umap=True)
    d = results["diagnostics"]["fashion_mnist"]
    log(f"  diagnostics (clean source, test): acc {d['acc']:.4f} macro-F1 {d['macro_f1']:.4f} "
        f"top-2 {d['top2_acc']:.4f} ECE(10) {d['ece_10bins']:.4f} AURC {d['aurc']:.4f} "
        f"sel-acc@80 {d['sel_acc_cov80']:.4f}")


def run_finetune(results: dict) -> None:
    ckpt = SOURCE_CKPT
    if not ckpt.exists():
        raise SystemExit("run `matrix` first: fine-tuning starts from its clean source model")
    table = []
    for target in FINETUNE_TARGETS:
        for freeze in FREEZES:
            for k in KS:
                cfg = {**{k2: v for k2, v in BASE.items() if k2 not in ("scheduler", "epochs")}, "scheduler": "cosine",
                       "init_from": str(ckpt), "finetune_dataset": target, "finetune_per_class": k, "freeze": freeze,
                       "finetune_epochs": FT_EPOCHS, "epochs": FT_EPOCHS, "finetune_lr": FT_LR, "batch_size": 32}
                t0 = time.perf_counter()
                trainer = make_trainer(cfg)
                result = trainer.fit()
                row = {"target": target, "freeze": freeze, "k": k, "before": round(trainer.before, 4),
                       "after": round(result.final["finetune_acc"], 4), "source_val_after": round(result.final["val_acc"], 4),
                       "wall_s": round(time.perf_counter() - t0, 1)}
                table.append(row)
                log(f"  {target:24s} {freeze:18s} k={k:3d}: {row['before']:.4f} -> {row['after']:.4f} "
                    f"(source val {row['source_val_after']:.4f})")
    results["finetune"] = {"rows": table, "epochs": FT_EPOCHS, "lr": FT_LR, "batch_size": 32,
                           "optimizer": "sgd (nesterov), cosine",
                           "note": "k labelled samples per class of the target's training split; "
                                   "accuracy on the target's test split"}


def run_circle(results: dict) -> None:
    from analysis.embedding import umap_plot

    rows = {}
    for w in CIRCLE_WEIGHTS:
        cfg = {**BASE, "eval_eps": [EPS], "eval_pgd_steps": 10, "eval_samples": 1000,
               "eval_datasets": ["fashion_mnist:gaussian_noise@3", "fashion_mnist:rotate@3"]}
        if w:
            cfg["circle_weight"] = w
        t0 = time.perf_counter()
        r = train(cfg)
        f = r.final
        rows[str(w)] = {k: round(v, 4) for k, v in f.items() if k in (
            "val_acc", "test_acc", "clean_acc", f"fgsm_acc_eps{EPS}", f"pgd_acc_eps{EPS}", "train_circle",
            "xdomain_acc_fashion_mnist_gaussian_noise_3", "xdomain_acc_fashion_mnist_rotate_3")}
        rows[str(w)]["wall_s"] = round(time.perf_counter() - t0, 1)
        name = "ce" if not w else f"ce_circle{w}"
        umap_plot(r.model, load_data("fashion_mnist").test, FIGURES / f"umap_{name}.png", n=2000,
                  title=f"UMAP of penultimate features: {'CE alone' if not w else f'CE + {w} x Circle'}")
        log(f"  circle weight {w}: " + ", ".join(f"{k} {v}" for k, v in rows[str(w)].items()))
    results["circle"] = {"rows": rows, "eps": EPS, "pgd_steps": 10, "m": 0.25, "gamma": 256.0,
                         "note": "robust metrics on the first 1000 validation images; a sample counts if correct "
                                 "clean and attacked; UMAPs in bench/results/generalization/"}


def markdown(results: dict) -> str:
    """The results as the Markdown tables of docs/generalization.md."""
    out = []
    m = results.get("matrix")
    if m:
        short = [t.replace("fashion_mnist:", "").replace("fashion_mnist", "clean") for t in m["targets"]]
        out += ["| source \\ target | " + " | ".join(short) + " |", "|---" * (len(short) + 1) + "|"]
        for src, row in m["accuracy"].items():
            out.append(f"| {src} | " + " | ".join(f"{row[t]:.3f}" for t in m["targets"]) + " |")
        out.append("")
    d = results.get("diagnostics", {}).get("fashion_mnist")
    if d:
        out += ["| clean source, test split | acc | macro P | macro R | macro F1 | top-2 | top-3 | top-5 | ECE (10 bins) "
                "| AURC | sel. acc @80 % | @90 % |", "|---" * 12 + "|",
                f"| | {d['acc']:.4f} | {d['macro_precision']:.4f} | {d['macro_recall']:.4f} | {d['macro_f1']:.4f} "
                f"| {d['top2_acc']:.4f} | {d['top3_acc']:.4f} | {d['top5_acc']:.4f} | {d['ece_10bins']:.4f} "
                f"| {d['aurc']:.4f} | {d['sel_acc_cov80']:.4f} | {d['sel_acc_cov90']:.4f} |", ""]
    f = results.get("finetune")
    if f:
        out += ["| target | frozen | k per class | before | after | source val acc after |", "|---" * 6 + "|"]
        out += [f"| {r['target']} | {r['freeze']} | {r['k']} | {r['before']:.4f} | {r['after']:.4f} "
                f"| {r['source_val_after']:.4f} |" for r in f["rows"]]
        out.append("")
    c = results.get("circle")
    if c:
        eps = c["eps"]
        out += [f"| loss | test acc | clean acc (1000 val) | FGSM @{eps} | PGD-10 @{eps} | gaussian_noise@3 / rotate@3 "
                "| train_circle |", "|---" * 7 + "|"]
        for w, r in c["rows"].items():
            name = "CE" if float(w) == 0 else f"CE + {w} x Circle"
            out.append(f"| {name} | {r.get('test_acc', float('nan')):.4f} | {r.get('clean_acc', float('nan')):.4f} "
                       f"| {r.get(f'fgsm_acc_eps{eps}', float('nan')):.4f} | {r.get(f'pgd_acc_eps{eps}', float('nan')):.4f} "
                       f"| {r.get('xdomain_acc_fashion_mnist_gaussian_noise_3', float('nan')):.4f} / "
                       f"{r.get('xdomain_acc_fashion_mnist_rotate_3', float('nan')):.4f} "
                       + (f"| {r['train_circle']:.1f} |" if "train_circle" in r else "| — |"))
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["matrix", "finetune", "circle"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--markdown", action="store_true", help="print the saved results as Markdown tables and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(JSON.read_text())))
        return 0
    torch.set_num_threads(args.threads)
    results = {}
    t0 = time.perf_counter()
    try:
        for part in args.parts:
            log(f"{part}:")
            {"matrix": run_matrix, "finetune": run_finetune, "circle": run_circle}[part](results)
            results.setdefault("wall_s", {})[part] = round(time.perf_counter() - t0, 1)
            save(results, [part])
    except DatasetNotFound as e:
        log(f"skipped: {e}")
        return 0
    log(f"total {time.perf_counter() - t0:.0f} s; results in {JSON}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
