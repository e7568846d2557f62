"""The searched objective: a reported metric, optionally under a constraint.

A constrained objective (say, maximize PGD accuracy while clean accuracy stays >= 0.5) is
reported as one extra metric, ``objective``: the metric itself where the constraint holds,
the metric pushed 1000 below (or above, when minimizing) every feasible value where it does
not. Samplers and ASHA then rank infeasible trials last while still seeing their slope.
"""

from __future__ import annotations

from typing import Any

OBJECTIVE_KEY = "rs_objective"  # the trial-config key carrying the spec (not a training parameter)
PENALTY = 1000.0


def feasible(metrics: dict[str, float], constraint: dict[str, Any] | None) -> bool:
    if not constraint:
        return True
    value = metrics.get(constraint["metric"])
    if value is None:
        return False
    lo, hi = constraint.get("min"), constraint.get("max")
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def score(metrics: dict[str, float], spec: dict[str, Any]) -> float:
    value = float(metrics[spec["metric"]])
    if feasible(metrics, spec.get("constraint")):
        return value
    return value - PENALTY if spec.get("mode", "max") == "max" else value + PENALTY
