"""The sections of a study file that other inputs share (``best.yaml`` reuses them): plain pydantic
models with their defaults, importing nothing heavy, so a reader of ``best.yaml`` (``search export``)
needs no torch (the default objective comes from ``trainables.core.metric_names``, which imports none).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainables.core.metric_names import DEFAULT_OBJECTIVE

# Exponent floats without a dot (``1e-3``): YAML 1.1 reads them as strings; our files read them as numbers.
EXPONENT_FLOAT = ("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                  list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """Writes what the study loader reads back unchanged: a string it would read as a number is quoted."""


_Dumper.add_implicit_resolver(*EXPONENT_FLOAT)


def dump_yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constraint(_Strict):
    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self):
        if self.min is None and self.max is None:
            raise ValueError("a constraint needs min or max")
        return self


class ParetoWith(_Strict):
    """A second objective: the search records the Pareto front of (metric, this) over its trials."""

    metric: str
    mode: Literal["max", "min"] = "max"


class Objective(_Strict):
    metric: str = DEFAULT_OBJECTIVE
    mode: Literal["max", "min"] = "max"
    constraint: Constraint | None = None
    pareto_with: ParetoWith | None = None


class Budget(_Strict):
    num_samples: int = Field(16, gt=0)
    max_epochs: int = Field(10, gt=0)
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(2.0, gt=1.0)
    scheduler: Literal["asha", "none"] = "asha"
    time_budget_s: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, gt=0)
    max_failures: int = Field(2, ge=0)
    # Best checkpoints kept per trial besides its latest; 1 saves disk, and costs Tune one experiment
    # snapshot per epoch (search/tuner.py assemble_tuner).
    keep_checkpoints: int = Field(2, ge=1, le=100)

    @model_validator(mode="after")
    def _grace(self):
        if self.grace_period > self.max_epochs:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_epochs ({self.max_epochs})")
        return self


class Resources(_Strict):
    cpus: float = Field(1.0, gt=0, le=256)
    gpus: float = Field(0.0, ge=0, le=16)


class Param(_Strict):
    type: Literal["choice", "grid", "uniform", "loguniform", "int"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False
    when: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.type in ("choice", "grid"):
            if self.values is None:
                raise ValueError(f"a {self.type} parameter needs 'values'")
            if len(self.values) == 0:
                raise ValueError("'values' is empty: give at least one value")
            if self.low is not None or self.high is not None:
                raise ValueError(f"a {self.type} parameter takes 'values', not low/high")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
            if self.values is not None:
                raise ValueError(f"a {self.type} parameter takes low/high, not 'values'")
            if not (math.isfinite(self.low) and math.isfinite(self.high)):
                raise ValueError(f"low and high must be finite numbers (got {self.low}, {self.high})")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) > high ({self.high})")
            if (self.type == "loguniform" or self.log) and self.low <= 0:
                raise ValueError(f"a log-scaled range needs low > 0 (got {self.low})")
            if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
                raise ValueError("an int parameter needs integer low and high")
        return self

    def is_discrete(self) -> bool:
        return self.type in ("choice", "grid", "int")

    def grid_values(self) -> list[Any]:
        if self.type in ("choice", "grid"):
            return list(self.values)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ValueError(f"a {self.type} parameter has no finite grid")

    def endpoints(self) -> list[Any]:
        if self.type in ("choice", "grid"):
            return list(self.values)
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]


class Reproduce(_Strict):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    epochs: int | None = Field(None, gt=0)


__all__ = ["EXPONENT_FLOAT", "dump_yaml", "Budget", "Constraint", "Objective", "Param", "ParetoWith", "Reproduce", "Resources"]
