"""``bench/results/*.json`` -> ``docs/performance.md``: one table, each figure a ratio against its
baseline measured in the same run, with the date and the machine. Missing results are listed as such.

    python bench/report.py [--results bench/results] [--out docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench/report.py: generated from bench/results, do not edit by hand -->\n", "<!-- end of generated -->"


def save_result(path: str | None, result: dict) -> None:
    """Write one bench's result as JSON where ``make bench`` (and this module's table) reads it."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2))


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        tv = f"torch {torch.__version__}"
    except ImportError:
        tv = ""
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}, {tv}"


def rows(r: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, measured, baseline in the same run, ratio, target, date and load) per result present."""
    out = []
    for key, how in (("vs_optuna", "Ray started by the search"), ("vs_optuna_warm", "Ray head already running"),
                     ("vs_optuna_long", "Ray started by the search")):
        if key in r:
            v = r[key]
            trials = f"{v['num_samples']} trials" if v.get("num_samples") else "16 trials"
            out.append((f"Whole search vs plain Optuna + pruner + MLflow (quickstart, {trials}, {how}; wall time)",
                        f"{v['service_s']:.1f} s", f"{v['baseline_s']:.1f} s", f"{v['ratio']:.2f}", "<= 0.7",
                        v["date"]))
    if "core_speed" in r:
        c = r["core_speed"]
        for name, t in c["train"].items():
            target = ">= 1.2" if name.startswith("channels_last (") else ""
            out.append((f"Core training, {name} ({c['dataset']} CNN, 1 thread)", f"{t['samples_per_s']:.0f} samples/s",
                        "minimal hand-written loop", f"{t['ratio']:.2f}", target, c["date"]))
        for name, e in c.get("eval", {}).items():
            if "inference" in name and "1024" not in name:  # the core evaluates under inference_mode
                out.append((f"Evaluation, {name}", f"{e['samples_per_s']:.0f} samples/s", "inference_mode batch 1024",
                            f"{e['ratio']:.2f}", "", c["date"]))
    if "core_vs_raw" in r:
        c = r["core_vs_raw"]
        out.append(("Core loop vs minimal loop, same layout (loop overhead)", f"{c['core_samples_per_s']:.0f} samples/s",
                    f"{c['raw_samples_per_s']:.0f} samples/s", f"{c['median_pairwise_ratio']:.2f}", ">= 0.9",
                    c.get("date", "")))
    if "pgd_vs_torchattacks" in r:
        c = r["pgd_vs_torchattacks"]
        out.append(("PGD attack vs torchattacks", f"{c['ours']:.0f} images/s", f"{c['torchattacks']:.0f} images/s",
                    f"{c['paired_ratio']:.2f}", ">= 1.0", c.get("date", "")))
    if "scaling" in r:
        s = r["scaling"]
        ref = next(iter(s["layouts"]))
        for name, x in s["layouts"].items():
            if name != ref:
                out.append((f"Aggregate training, {name} (trials x threads)", f"{x['samples_per_s']:.0f} samples/s",
                            f"{ref}: {s['layouts'][ref]['samples_per_s']:.0f} samples/s", f"{x['ratio']:.2f}", "",
                            s["date"]))
    if "cli_startup" in r:
        c = r["cli_startup"]
        for name, x in c["commands"].items():
            out.append((f"`search {name}` in a fresh process (its imports), vs `python -c 'import pandas'`",
                        f"{x['seconds']:.2f} s", f"{c['baseline_s']:.2f} s", f"{x['ratio']:.2f}",
                        f"<= {c['target_ratio']:g}", c["date"]))
    if "trial_overhead" in r:
        t = r["trial_overhead"]
        out.append(("One trial inside a search vs the core called directly", f"{t['search_s_per_trial']:.2f} s",
                    f"{t['direct_s_per_trial']:.2f} s", f"{t['ratio']:.2f}",
                    f"overhead < 1 s ({t['overhead_s_per_trial']:.2f} s)", t.get("date", "")))
    if "search_efficiency" in r:
        s = r["search_efficiency"]
        hit = s["tpe_asha_epochs_to_target"]
        out.append(("Epochs for TPE + ASHA to come within 0.5 points of a random search's best",
                    f"{hit} epochs" if hit else "never", f"{s['random_epochs']} epochs ({s['trials']} random trials)",
                    f"{s['share_of_random_epochs']:.2f}" if hit else "-", "<= 0.25", s["date"]))
    if "multiobjective" in r:
        m = r["multiobjective"]
        h = m["mean_hypervolume"]
        out.append(("Clean x robust front hypervolume, NSGA-II vs TPE + post-hoc front (same epochs)",
                    f"{h['nsga2']:.4f}", f"{h['tpe']:.4f}", f"{m['ratio_nsga2_vs_tpe']:.2f}", "> 1 (better)", m["date"]))
    if "gpu_packing" in r:
        g = r["gpu_packing"]
        if "precision" in g:
            out.append((f"GPU epoch, bf16 + channels_last vs fp32 ({g['device']})", "", "fp32",
                        f"{g['precision']['speedup']:.2f}", "", g["date"]))
        for n, x in g.get("packing", {}).items():
            out.append((f"GPU aggregate throughput, {n} trials packed ({g['device']})",
                        f"{x['samples_per_s']:.0f} samples/s, {x['peak_mem_gib_per_trial']:.2f} GiB/trial", "1 trial",
                        f"{x['ratio_vs_one']:.2f}", ">= 2.5 at 4" if str(n) == "4" else "", g["date"]))
    return out


def load(r: dict, row) -> str:
    """The 1-minute load average around the run, when run_all.py recorded it (2 cores: above 2 is contention)."""
    for v in r.values():
        if isinstance(v, dict) and v.get("date") == row[5] and "loadavg" in v:  # some results are lists (mutants)
            a, b = v["loadavg"]
            return f", load {a:.1f}-{b:.1f}" + (", quick size" if v.get("quick") else "")
    return ""


def breakdown(r: dict) -> list[str]:
    if "vs_optuna" not in r:
        return []
    bd = r["vs_optuna"]["breakdown"]
    lines = ["", "Where a whole `search run` spends its seconds (medians; `bench/vs_optuna.py`):", "",
             "| phase | service (s) | baseline (s) |", "|---|---:|---:|"]
    s, b = bd["service"], bd["baseline"]
    pairs = [("interpreter start, imports, checks before ray.init", "interpreter_and_imports", "interpreter_and_imports"),
             ("Ray start", "ray_start", None), ("MLflow parent run", "parent_run", None),
             ("other set-up (study, store, Tuner)", "setup_other", "setup"),
             ("first trial's first epoch starts after", "first_trial_start", None),
             ("trials (Tuner.fit / study.optimize)", "fit", "optimize"),
             ("  of which inside the core's epochs", "training_in_epochs", "training_in_epochs"),
             ("per-trial overhead (slot-seconds not training / trials)", "per_trial_overhead", "per_trial_overhead"),
             ("wrap-up (table, best model, artifacts)", "wrap_up_in_search", None), ("exit", "exit", "exit"),
             ("total", "total", "total")]
    for label, sk, bk in pairs:
        sv = f"{s[sk]:.2f}" if sk in s else "-"
        bv = f"{b[bk]:.2f}" if bk and bk in b else "-"
        lines.append(f"| {label} | {sv} | {bv} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(REPO / "bench" / "results"))
    p.add_argument("--out", default=str(REPO / "docs" / "performance.md"))
    args = p.parse_args(argv)
    r = {f.stem: json.loads(f.read_text()) for f in sorted(Path(args.results).glob("*.json"))}
    lines = [BEGIN, f"Machine: {machine()}.", "",
             "Regenerated by `make bench` from `bench/results/*.json` (machine load: the 1-minute load average "
             "before and after each run; 2 cores, so above 2 the runs shared them).", "",
             "| figure | measured | baseline (same run) | ratio | target | date, machine load |", "|---|---|---|---:|---|---|"]
    lines += [f"| {' | '.join(row[:5])} | {row[5]}{load(r, row)} |" for row in rows(r)]
    lines += breakdown(r) + [END]
    out = Path(args.out)
    block = "\n".join(lines)
    text = out.read_text() if out.is_file() else "# Performance\n\n" + BEGIN + END + "\n"
    if BEGIN in text and END in text:  # the hand-written notes around the generated block stay
        head, _, rest = text.partition(BEGIN)
        text = head + block + rest.partition(END)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {args.out} from {len(r)} result file(s): {', '.join(r) or 'none'}")


if __name__ == "__main__":
    main()
