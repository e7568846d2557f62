"""Every sampler survives Tune's experiment snapshots (it pickles the searcher with its sampler)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from spaces.samplers import SAMPLERS, make_sampler
from spaces.study import load_study, parse_study

SPACES = Path(__file__).resolve().parents[2] / "spaces"


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_pickles_and_samples_after_loading(name):
    study = load_study(SPACES / "quickstart.yaml")
    if SAMPLERS[name].finite_space:  # quickstart searches continuous ranges: a grid over its choices instead
        study = parse_study("name: g\nfamily: optimization\ndataset: digits\n"
                            "search: {activation: {type: grid, values: [relu, gelu]}}\n")
    sampler = make_sampler(name, study)
    again = pickle.loads(pickle.dumps(sampler))
    assert type(again) is type(sampler)
    if name == "nsga2":  # its lock is made anew, so it still serves trials
        assert hasattr(again, "_thread_lock") and again._thread_lock.acquire(blocking=False)
        again._thread_lock.release()


def test_a_pickled_nsga2_sampler_loads_in_a_fresh_process():
    study = load_study(SPACES / "quickstart.yaml")
    blob = pickle.dumps(make_sampler("nsga2", study))
    code = "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); print(type(s).__name__)"
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True).stdout
    assert out.decode().strip() == "PicklableNSGAIISampler"
