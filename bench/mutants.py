"""Realistic single-point mutants: how many plausible one-line bugs the test suite catches (issue 18).

Each mutant is one textual replacement in one production file (``old`` must occur exactly once). The
script applies it, runs the mutant's test files with ``pytest -x -q`` (a timeout per run), records
*caught* (a test failed) or *survived* (all passed), and writes the file back byte for byte before the
next one; a file with uncommitted changes is refused, so the tree is never left mutated.

``L*`` are the survivors issue 18 lists from the previous campaign; ``C*`` the next campaign's.
The test files per mutant are the ones that exercise its module (a survivor here may still be caught
by a file outside its group: ``--broad`` runs whole test folders instead, several minutes per survivor).

    python bench/mutants.py [--only C05 L3 ...] [--broad] [--json bench/results/mutants.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    bug: str  # the plausible mistake it stands for


def _core(*names: str) -> tuple[str, ...]:
    return tuple(f"tests/core/test_{n}.py" for n in names)


REGNET = _core("regnet_math", "core_registries", "core_contracts", "seed_recipes", "acts_regnet", "attacks") + (
    "tests/trainables/test_regnet_family.py",)
LOSSES = _core("core_registries", "core_contracts", "generalization_parts", "core_training", "seed_recipes",
               "generalization", "acts_losses")
ATTACKS = _core("attacks", "adversarial", "core_contracts", "seed_recipes", "core_registries", "generalization",
                "acts_attacks") + ("tests/trainables/test_adversarial_family.py",)
TRANSFER = _core("generalization_parts", "generalization", "acts_transfer")
DATA = _core("data", "generalization_parts", "mnistc", "generalization", "acts_transfer")
TRAIN = _core("core_training", "core_registries", "core_contracts", "seed_recipes", "adversarial", "acts_training",
              "acts_optim")
RECORDS = ("tests/records", "tests/search/test_fail_fast.py", "tests/search/test_acts_search.py")
SEARCH = tuple(f"tests/search/test_{n}.py" for n in ("eta", "overrides", "fail_fast", "multiobjective", "driver",
                                                       "acts_search", "acts_eta", "acts_progress", "acts_overrides"))
SEARCH_RUN = tuple(f"tests/search/test_{n}.py" for n in ("search", "drivers", "preflight", "acts_search"))
SPACES = ("tests/spaces", "tests/search/test_overrides.py")

R, CI, L, A, AD = ("trainables/core/gaussian_head.py", "trainables/core/circle.py", "trainables/core/losses.py",
                   "trainables/core/attacks.py", "trainables/core/robustness.py")
FT, TR, CO, DA, OP, TN = ("trainables/core/finetune.py", "trainables/core/transfer.py", "trainables/core/corruptions.py",
                          "trainables/core/data.py", "trainables/core/optim.py", "trainables/core/trainer.py")
STEPS = "trainables/core/steps.py"

MUTANTS = [Mutant(*m) for m in (
    # ---------------------------------------------------------------- issue 18's listed survivors
    ("L1", R, "kurtosis_term(z, y, 1.0, self.kurtosis_penalty,", 'kurtosis_term(z, y, 1.0, "linear",', REGNET,
     "the Gaussian head ignores its configured kurtosis penalty"),
    ("L2", R, "return -0.5 * (sq - 2 * mu_t * z + mu_t**2) / sigma_t**2",
     "return -0.5 * (sq - 2 * mu_t * z + mu_t**2) / sigma_t", REGNET, "Gaussian scores divide by sigma_T"),
    ("L3", TN, "if not math.isfinite(train_loss):", "if math.isnan(train_loss):", TRAIN, "divergence on NaN only"),
    ("L4", FT, 'self.before = float(state.get("finetune_before", self.before))', "pass", TRANSFER,
     "resume restores the weights but not the 'before' accuracy"),
    ("L5", "trainables/core/crossdomain.py", "return self.measure(trainer.eval_model(), trainer.autocast())",
     "return self.measure(trainer.model, trainer.autocast())", TRANSFER, "cross-domain metrics of the live model"),
    ("L6", TR, "return last_block(last) if isinstance(last, nn.Sequential) else last", "return last", TRANSFER,
     "all_but_last_block does not descend into a Sequential last child"),
    ("L7", TR, "if len(idx) < k:", "if len(idx) <= k:", TRANSFER, "a class of exactly k samples refused"),
    ("L8", TN, "(1 if n % cfg.batch_size > 1 else 0)", "(1 if n % cfg.batch_size > 0 else 0)", TRAIN,
     "steps_per_epoch counts the skipped 1-sample batch"),
    ("L9a", "search/tuner.py", "max_concurrent=meta.max_concurrent or trials_that_fit(", "max_concurrent=trials_that_fit(",
     SEARCH_RUN, "the tuner ignores the user's max_concurrent"),
    ("L9b", "search/runner.py", "max_concurrent or study.budget.max_concurrent,", "study.budget.max_concurrent,",
     SEARCH_RUN, "start_search ignores the user's max_concurrent"),
    ("L10", "search/callbacks.py", "        epoch = t.epoch\n", "        epoch = t.best_epoch\n", SEARCH_RUN,
     "the epochs-run tag records the best epoch"),
    # ---------------------------------------------------------------- the next campaign
    ("C01", R, "present = counts >= 2\n        var_t", "present = counts >= 1\n        var_t", REGNET,
     "a 1-sample class enters the KL loss"),
    ("C02", R, "maha = (targets - means).pow(2).sum(1) / var_t", "maha = (targets - means).pow(2).sum(1) / float(sigma_t)",
     REGNET, "mean term divided by sigma_T"),
    ("C03", R, "regnet_loss, kurtosis_penalty, kurtosis_estimator,\n", 'regnet_loss, "linear", kurtosis_estimator,\n',
     REGNET, "the head builder drops the configured penalty"),
    ("C04", R, '"unbiased": 4}', '"unbiased": 3}', REGNET, "unbiased kurtosis from 3 samples"),
    ("C05", R, "safe = (n >= 4)", "safe = (n > 4)", REGNET, "G2 correction skipped at exactly 4 samples"),
    ("C06", R, "num_batches = max(1, n // batch_size)", "num_batches = max(1, -(-n // batch_size))", REGNET,
     "balanced batches: ceil instead of floor"),
    ("C07", CI, "triu(diagonal=1)", "triu(diagonal=0)", LOSSES, "Circle loss counts self-pairs as positives"),
    ("C08", CI, "an = (sn.detach() + m).clamp_min(0)", "an = (sn.detach() - m).clamp_min(0)", LOSSES,
     "Circle negative weight with the wrong sign of m"),
    ("C09", CI, "logit_n = gamma * an * (sn - m)", "logit_n = gamma * an * (sn - (1 - m))", LOSSES,
     "Circle margins swapped"),
    ("C10", L, "eps / (k - 1) * (logp.sum(1) - true)", "eps / k * (logp.sum(1) - true)", LOSSES,
     "smoothing to the others divides by K"),
    ("C11", L, ".pow(focal_gamma)", ".pow(2.0)", LOSSES, "focal loss ignores the user's gamma"),
    ("C12", L, "if p.dim() > 1 and p.requires_grad", "if p.dim() >= 1 and p.requires_grad", LOSSES,
     "L1 also on biases and BatchNorm"),
    ("C13", STEPS, 'return DEFAULT_STEPS["pgd"] * eps / max(steps, 1)', 'return DEFAULT_STEPS["pgd"] * eps', ATTACKS,
     "PGD's default step not divided by the steps"),
    ("C14", A, "(x + eps).clamp_(max=1.0)", "(x + eps)", ATTACKS, "the attack box leaves [0, 1]"),
    ("C15", A, "success, score = (hit, -loss) if targeted", "success, score = (hit, loss) if targeted", ATTACKS,
     "targeted restarts keep the highest loss"),
    ("C16", A, "            m.training = training", "            m.training = True", ATTACKS,
     "attacks leave the model in train mode"),
    ("C17", A, "xa, ya = xb[ok], yb[ok]", "xa, ya = xb, yb", ATTACKS, "robust accuracy attacks wrong samples too"),
    ("C18", AD, "(1 - 2 * kappa.float() / steps)", "(1 - kappa.float() / steps)", ATTACKS, "GAIRAT's weight formula"),
    ("C19", AD, "if epoch >= gairat_burn_in", "if epoch > gairat_burn_in", ATTACKS, "GAIRAT burn-in one epoch late"),
    ("C20", AD, "loss = beta * loss + (1 - beta) * loss_fn", "loss = (1 - beta) * loss + beta * loss_fn", ATTACKS,
     "adv_beta weighs the clean half"),
    ("C21", AD, "take = torch.rand((), generator=generator).item() < prob",
     "take = torch.rand((), generator=generator).item() > prob", ATTACKS, "adv_prob inverted"),
    ("C22", AD, 'step = _combine(model, loss_fn, adv_beta), attack_step("fgsm", adv_eps)',
     'step = _combine(model, loss_fn, adv_beta), attack_step("fgsm_rs", adv_eps)', ATTACKS,
     "plain FGSM training with FGSM-RS's step"),
    ("C23", FT, "pre_epochs = cfg.epochs - plan.epochs", "pre_epochs = cfg.epochs", TRANSFER,
     "pretraining takes every epoch"),
    ("C24", FT, "self.ft.per_class, seed=self.plan.seed)", "self.ft.per_class, seed=0)", TRANSFER,
     "the k-shot subset ignores the run's seed"),
    ("C25", FT, 'NOT_IN_FINETUNING = ("swa", "swa_start", "swa_lr", ', "NOT_IN_FINETUNING = (", TRANSFER,
     "SWA carried into fine-tuning"),
    ("C26", TR, "if id(m) not in keep and not any(True for _ in m.children())]", "if id(m) not in keep]", TRANSFER,
     "containers frozen too (freezing the last block through its parent)"),
    ("C27", TR, "wrong = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]", "wrong = []", TRANSFER,
     "shape mismatches not reported by init_from"),
    ("C28", CO, "b = max(2, round(level[0] * w / 28))", "b = max(1, round(level[0] * w / 28))", DATA,
     "pixelate with 1-pixel blocks on small images"),
    ("C29", CO, "sigma = level[0] * max(x.shape[-1] / 28, 0.5)", "sigma = level[0] * x.shape[-1] / 28", DATA,
     "blur vanishes on small images"),
    ("C30", CO, "return (x + level[0] * noise).clamp_(0, 1)", "return x + level[0] * noise", DATA,
     "Gaussian noise not clipped (equivalent: apply() clips every corruption)"),
    ("C31", DA, "size=size, max_train_samples=None)", "size=size)", DATA, "targets inherit the source's sample cap"),
    ("C32", DA, "g = torch.Generator().manual_seed(spec.split_seed)", "g = torch.Generator().manual_seed(0)", DATA,
     "the validation split ignores split_seed"),
    ("C33", OP, "start_factor=1.0 / (warmup_epochs + 1)", "start_factor=1.0 / warmup_epochs", TRAIN,
     "warm-up starts one step too high"),
    ("C34", OP, "nesterov=nesterov and m > 0", "nesterov=False", TRAIN, "SGD ignores the user's nesterov"),
    ("C35", OP, "at = sorted({max(1, round(f * epochs))", "at = sorted({max(0, round(f * epochs))", TRAIN,
     "a milestone fraction rounding to epoch 0"),
    ("C36", OP, "int(0.75 * epochs)", "int(0.25 * epochs)", TRAIN, "SWA's default start in the first quarter"),
    ("C37", OP, 'g = g.add(p, alpha=group["weight_decay"])', 'g = g.add(p, alpha=-group["weight_decay"])', TRAIN,
     "sign-SGD weight decay with the wrong sign"),
    ("C38", TN, 'self.step = state.get("step", self.epoch)', "self.step = self.epoch", TRAIN + TRANSFER,
     "resume loses the global step across phases"),
    ("C39", TN, 'self.generator.set_state(state["rng"]["generator"])', "self.generator.get_state()", TRAIN,
     "resume does not restore the data-order generator"),
    ("C40", TN, 'self.scheduler.load_state_dict(state["scheduler"])', "pass", TRAIN,
     "resume does not restore the scheduler"),
    ("C41", "records/states.py", "if epochs >= max_epochs:", "if epochs > max_epochs:", RECORDS,
     "a trial at exactly max_epochs is not completed"),
    ("C42", "records/table.py", '(-1.0 if mode == "max" else 1.0)', '(1.0 if mode == "max" else -1.0)', RECORDS,
     "rank inverts the mode"),
    ("C43", "records/table.py", '"best_epoch": pd.to_numeric(table["best_epoch"], errors="coerce"),',
     '"best_epoch": -pd.to_numeric(table["best_epoch"], errors="coerce"),', RECORDS, "ties go to the later epoch"),
    ("C44", "records/states.py", "or better(value, t.best, self.mode) or value == t.best:",
     "or better(value, t.best, self.mode):", RECORDS, "the tracker keeps the earliest of equal values"),
    ("C45", "records/table.py", '~table["outcome"].isin(RANKABLE) | table[best_col].isna(),',
     '~table["outcome"].isin(RANKABLE),', RECORDS + ("tests/records/test_acts_rank.py",),
     "a completed trial without a value ranks as scored"),
    ("C46", "search/eta.py", "if r < max_epochs))", "if r <= max_epochs))", SEARCH, "a rung at max_epochs"),
    ("C47", "search/eta.py", "previous, share = stop, share / self.reduction_factor", "previous, share = stop, share",
     SEARCH, "the ETA ignores ASHA's reduction"),
    ("C48", "search/eta.py", "max(running.values(), default=0.0))", "0.0)", SEARCH,
     "the ETA forgets the longest running trial"),
    ("C49", "search/eta.py", "self.epochs_timed += epoch - self.reached[trial_id]", "self.epochs_timed += 1", SEARCH,
     "a multi-epoch report counts as one epoch"),
    ("C50", "search/progress.py", 'value > self.best[0] if self.mode == "max" else value < self.best[0]',
     "value > self.best[0]", SEARCH, "the progress best ignores mode min"),
    ("C51", "search/progress.py", "self.time_budget_s - elapsed)", "self.time_budget_s)", SEARCH,
     "the ETA capped at the whole time budget"),
    ("C52", "search/callbacks.py", '{f"{k}_epoch" if k in trial.config else k: v', "{k: v", SEARCH,
     "a metric named like a parameter shares its column"),
    ("C53", "search/callbacks.py", "if t.epoch <= getattr(self", "if t.epoch < getattr(self", SEARCH,
     "an epoch redone after a resume is logged twice"),
    ("C54", "search/overrides.py", 'key, eq, text = item.partition("=")', 'key, eq, text = item.rpartition("=")',
     SEARCH, "an override splits at the last '='"),
    ("C55", "spaces/sections.py", "if self.grace_period > self.max_epochs:", "if self.grace_period >= self.max_epochs:",
     SPACES, "grace_period == max_epochs refused"),
    ("C56", "spaces/sections.py", "and self.low <= 0:", "and self.low < 0:", SPACES, "a log range from 0 accepted"),
    ("C57", "spaces/sections.py", "range(int(self.low), int(self.high) + 1,", "range(int(self.low), int(self.high),",
     SPACES, "an int grid without its high end"),
)]

BROAD_CORE = ("tests/core", "tests/trainables", "tests/analysis")
BROAD_OTHER = ("tests/records", "tests/spaces", "tests/analysis") + SEARCH + SEARCH_RUN + tuple(
    f"tests/search/test_{n}.py" for n in ("driver", "store_outage", "what_users_read"))


def run_one(m: Mutant, tests: tuple[str, ...], python: str) -> tuple[str, str, float]:
    """(verdict, the first failing test or pytest's summary, seconds); the file is restored before returning."""
    path = REPO / m.file
    original = path.read_bytes()
    text = original.decode()
    if text.count(m.old) != 1:
        return "not-applied", f"'old' occurs {text.count(m.old)} times", 0.0
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": os.environ.get("RAY_ADDRESS", "local")}
    t0 = time.perf_counter()
    try:
        path.write_text(text.replace(m.old, m.new))
        proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        lines = proc.stdout.strip().splitlines()
        failed = next((x for x in lines if x.startswith(("FAILED", "ERROR"))), lines[-1] if lines else "")
        verdict = {0: "survived", 1: "caught"}.get(proc.returncode, f"pytest-exit-{proc.returncode}")
    except subprocess.TimeoutExpired:
        verdict, failed = "timeout", ""
    finally:
        path.write_bytes(original)
    return verdict, failed, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="mutant ids (default: all)")
    ap.add_argument("--broad", action="store_true", help="whole test folders instead of each mutant's files")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only]
    dirty = subprocess.run(["git", "diff", "--name-only", "--", *sorted({m.file for m in chosen})], cwd=REPO,
                           capture_output=True, text=True).stdout.split()
    if dirty:
        print(f"uncommitted changes in {', '.join(dirty)}: commit or stash them first", file=sys.stderr)
        return 2
    results = []
    for m in chosen:
        tests = (BROAD_CORE if m.file.startswith("trainables") else BROAD_OTHER) if args.broad else m.tests
        verdict, detail, seconds = run_one(m, tests, sys.executable)
        results.append({**asdict(m), "verdict": verdict, "detail": detail, "seconds": round(seconds, 1)})
        print(f"{m.id:4s} {verdict:9s} {seconds:5.0f}s  {m.bug}  [{detail[:120]}]", flush=True)
    caught = sum(r["verdict"] == "caught" for r in results)
    print(f"caught {caught} of {len(results)} ({100 * caught / max(1, len(results)):.0f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
