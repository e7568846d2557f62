"""What one trial needs against what the machine (or a cluster) has, before Ray starts.

A study asking for ``gpus: 1`` on a CPU machine otherwise passes validation, starts Ray (seconds) and
is refused only then. The local count is read the way Ray counts when it starts on this machine:
the CPUs this process may use, and the NVIDIA devices it may see (``CUDA_VISIBLE_DEVICES`` first).
No Ray, no torch: ``search validate`` runs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SearchError

CPU, GPU = "CPU", "GPU"  # Ray's resource names


def local_resources() -> dict[str, float]:
    """CPUs and GPUs a local Ray would offer trials here."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {CPU: float(cpus), GPU: float(_visible_gpus())}


def _visible_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    devices = {p.name for p in Path("/proc/driver/nvidia/gpus").glob("*")}
    nodes = [p for p in Path("/dev").glob("nvidia[0-9]*") if p.name[len("nvidia"):].isdigit()]
    return max(len(devices), len(nodes))


def cluster_resources(address: str) -> dict[str, float]:
    """The resources of the Ray cluster at ``address`` (joined briefly, as a driver)."""
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return dict(ray.cluster_resources())
    finally:
        ray.shutdown()


def describe(have: dict[str, float]) -> str:
    return f"{have.get(CPU, 0):g} CPUs, {have.get(GPU, 0):g} GPUs"


def shortfalls(cpus: float, gpus: float, have: dict[str, float], where: str) -> list[tuple[str, str]]:
    """(key, problem) for each resource one trial needs more of than ``have`` holds."""
    out = []
    if gpus > have.get(GPU, 0):
        out.append(("gpus", f"a trial asks for {gpus:g} GPU but {where} has {have.get(GPU, 0):g}; set resources.gpus: 0 "
                            "to run on CPUs, or use --address to run on a cluster with GPUs"))
    if cpus > have.get(CPU, 0):
        out.append(("cpus", f"a trial asks for {cpus:g} CPUs but {where} has {have.get(CPU, 0):g}"))
    return out


def check_fits(cpus: float, gpus: float, have: dict[str, float], where: str, line_of=None) -> None:
    """Raise ``SearchError`` with one line per missing resource, naming ``resources.KEY`` and its line."""
    problems = []
    for key, problem in shortfalls(cpus, gpus, have, where):
        line = line_of(("resources", key)) if line_of else None
        problems.append(f"resources.{key}{f' (line {line})' if line else ''}: {problem}")
    if problems:
        raise SearchError("\n".join(problems))
