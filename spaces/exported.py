"""``best.yaml``: a search's best configuration, as ``search export`` writes it and ``search reproduce``
reads it. One model (``Exported``) for both directions, built from the study's own sections
(``Objective``, ``Resources``, ``Reproduce``, ``Budget.max_failures``), so their defaults are the
study's and are written nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, field_validator

from trainables.core.config import ConfigError, TrainConfig
from trainables.families import FAMILIES

from .study import Budget, Objective, Reproduce, Resources, StudyError, _Strict, read_yaml_file, yaml_problems

WHAT = "exported configuration"


class ExportedObjective(Objective):
    """The study's objective, plus where its best value was found."""

    searched: str | None = None  # the value ranked (the metric, or its penalized form under a constraint)
    value: float | None = None
    trial: str | None = None
    epoch: int | None = None


class Exported(_Strict):
    search: str = "export"
    study: str = ""
    family: str
    dataset: str = ""
    objective: ExportedObjective = ExportedObjective()
    config: dict[str, Any]
    resources: Resources = Resources()
    max_failures: int = Budget.model_fields["max_failures"].default
    reproduce: Reproduce = Reproduce()

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        if v not in FAMILIES:
            raise ValueError(f"unknown family {v!r}; choose one of: {', '.join(FAMILIES)}")
        return v

    def train_config(self, epochs: int | None = None) -> TrainConfig:
        """The configuration to reproduce: at ``epochs``, else ``reproduce.epochs``, else as searched."""
        return TrainConfig.from_dict(self.config, **({"epochs": n} if (n := epochs or self.reproduce.epochs) else {}))


def exported_from(best: dict[str, Any]) -> Exported:
    """``best.yaml`` from the records' best trial (``records.best_trial_record``): the study's sections are
    read through the study's models, so a study that left them out gets the study's defaults."""
    study = best.get("study_doc") or {}

    def section(key: str) -> dict:
        return study.get(key) if isinstance(study.get(key), dict) else {}

    return Exported(
        search=best["search"], study=best["study"], family=best["family"], dataset=best["dataset"],
        objective=ExportedObjective(**best["objective"]), config=best["config"],
        resources=Resources.model_validate(section("resources")),
        max_failures=Budget.model_validate({k: v for k, v in section("budget").items()
                                            if k == "max_failures"}).max_failures,
        reproduce=Reproduce.model_validate(section("reproduce")),
    )


def write_exported(exported: Exported, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = exported.model_dump(exclude_none=True)
    doc["objective"] = exported.objective.model_dump(exclude={"constraint", "pareto_with"})
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def load_exported(path: str | Path) -> Exported:
    """Read a ``best.yaml``; every problem is a ``StudyError`` line with its key path and line number."""
    text, doc = read_yaml_file(path, WHAT)
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else f"a {type(doc).__name__}"
        raise StudyError(str(path), [f"(file): a mapping with family, config, ... as `search export` writes it "
                                     f"(got {got})"], WHAT)
    problems = yaml_problems(text)
    try:
        exported = Exported.model_validate(doc)
    except ValidationError as e:
        exported = None
        for err in e.errors():
            loc, msg = tuple(err["loc"]), err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                problems.add(loc[:-1], f"required key '{loc[-1]}' is missing (write the file with `search export NAME`)")
            elif loc == ("config",):
                problems.add(loc, f"a mapping of training parameters (got {type(doc['config']).__name__})")
            else:
                problems.add(loc, msg)
    if exported is not None:
        try:
            exported.train_config()
        except ConfigError as e:
            for loc, msg in e.problems:
                problems.add(("config", *loc), msg)
    if problems.items:
        raise StudyError(str(path), problems.items, WHAT)
    return exported


__all__ = ["Exported", "ExportedObjective", "exported_from", "load_exported", "write_exported"]
