"""Reading a checkpoint file: one clear error for every way it can be unusable.

Every loader in the core (a trainer resuming, ``load_model``, ``init_from``) reads through
``read_checkpoint``, so all of them load with ``weights_only=True`` and fail the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint file is absent, truncated, or not one written by ``Trainer.save_checkpoint``."""


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu", needs: tuple[str, ...] = ("model",)) -> dict:
    """``torch.load(weights_only=True)`` with one clear error for every way a checkpoint file can be unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: {'is a directory' if path.is_dir() else 'no such file'}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zips, foreign pickles and empty files raise many types
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated, or not written by "
                              f"Trainer.save_checkpoint): {type(e).__name__}: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of tensors: "
                              "not written by Trainer.save_checkpoint")
    missing = [k for k in needs if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: not written by Trainer.save_checkpoint")
    return state


__all__ = ["CheckpointError", "read_checkpoint"]
