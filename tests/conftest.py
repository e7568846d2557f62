"""Shared test helpers: tiny, fast training overrides and a skip for the optional Debian dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tiny models on a shared 2-core machine: intra-op threads only add synchronization (and, when
# another process holds a core, OpenMP spin-waits that make a step 10-50x slower).
# ROBUST_SEARCH_TEST_THREADS=N overrides.
torch.set_num_threads(int(os.environ.get("ROBUST_SEARCH_TEST_THREADS", "1")))

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# Fast config overrides: 8x8 digits, a two-block CNN, CPU. Merge with ``{**TINY, ...}``.
TINY = {"dataset": "digits", "filters": [8, 16], "epochs": 2, "batch_size": 64, "device": "cpu"}

needs_fashion_mnist = pytest.mark.skipif(
    not all((FASHION_MNIST_DIR / f).is_file() for f in FASHION_MNIST_FILES),
    reason=f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of ``TINY`` (tests may mutate it)."""
    return dict(TINY)
