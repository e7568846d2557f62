"""``best.yaml``: a search's best configuration, as ``search export`` writes it and ``search reproduce``
reads it (``spaces.study.load_exported`` also checks its family and configuration). One model
(``Exported``) for both directions, built from the study's own sections (``Objective``,
``Resources``, ``Reproduce``, ``Budget.max_failures``), so their defaults are the study's and are
written nowhere else. Nothing heavy is imported: ``search export`` needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sections import Budget, Objective, Reproduce, Resources, _Strict, dump_yaml


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

    def config_at(self, epochs: int | None = None) -> dict[str, Any]:
        """The configuration to reproduce: at ``epochs``, else ``reproduce.epochs``, else as searched."""
        n = epochs or self.reproduce.epochs
        return {**self.config, **({"epochs": n} if n else {})}


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
    out.write_text(dump_yaml(doc))
    return out


__all__ = ["Exported", "ExportedObjective", "exported_from", "write_exported"]
