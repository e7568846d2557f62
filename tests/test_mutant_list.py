"""``bench/mutants.py`` stays runnable: every mutant's text still occurs exactly once in its file, and its test
files exist (a refactor that moves the code moves the mutant too, or the campaign silently measures less)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutants():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "bench" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.MUTANTS


def test_every_mutant_applies_once_and_names_existing_tests():
    problems = []
    for m in _mutants():
        path = ROOT / m.file
        count = path.read_text().count(m.old) if path.is_file() else None
        if count != 1:
            problems.append(f"{m.id}: {m.file}: the text occurs {count} times (move the mutant with its code)")
        problems += [f"{m.id}: no test path {t}" for t in m.tests if not (ROOT / t).exists()]
    assert not problems, "\n".join(problems)
