"""Optuna samplers by name: the one list that the study schema, the CLI and the runner read.

Each entry says what the sampler asks of a study (two objectives, a finite space) so validation
reads those facts instead of testing names. Optuna is imported when a sampler is built, not when
the names are read, and this module imports nothing heavy: the CLI's ``--help`` reads the names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

Study = Any  # a spaces.study.Study (not imported: the study schema imports this module for the names)


@dataclass(frozen=True)
class Sampler:
    build: Callable[[Study], Any]  # the study -> an optuna.samplers.BaseSampler
    objectives: int = 1  # 2: searches the objective and ``objective.pareto_with`` together
    finite_space: bool = False  # every searched parameter must be discrete (choice / grid / int)


SAMPLERS: dict[str, Sampler] = {}  # name -> Sampler, in registration order (the only list of names)


def register_sampler(name: str, sampler: Sampler) -> Sampler:
    SAMPLERS[name] = sampler
    return sampler


def _tpe(study: Study):
    import optuna

    return optuna.samplers.TPESampler(seed=study.seed)


def _random(study: Study):
    import optuna

    return optuna.samplers.RandomSampler(seed=study.seed)


def _grid(study: Study):
    import optuna

    return optuna.samplers.GridSampler({n: p.grid_values() for n, p in study.search.items()}, seed=study.seed)


def _cmaes(study: Study):
    import optuna

    return optuna.samplers.CmaEsSampler(seed=study.seed, warn_independent_sampling=False)


def _nsga2(study: Study):
    # Optuna's default generation (50 trials) is random sampling for most searches run here; a
    # quarter of the budget leaves about four generations to evolve.
    population = max(4, min(50, study.budget.num_samples // 4))
    return picklable_nsga2()(seed=study.seed, population_size=population)


_MADE: dict[str, type] = {}


def picklable_nsga2() -> type:
    """Optuna's NSGA-II sampler, picklable: since Optuna 5.1 its genetic-algorithm base holds a
    ``threading.Lock``, and Tune pickles the searcher (with its sampler) into every experiment
    snapshot, which a search needs to be resumed. The lock is left out and made anew on load.
    Made on first use (Optuna is not imported with the names); found by pickle as
    ``spaces.samplers.PicklableNSGAIISampler`` through the module's ``__getattr__``."""
    if "nsga2" not in _MADE:
        import threading

        import optuna

        class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
            def __getstate__(self):
                state = self.__dict__.copy()
                state["_thread_lock"] = "_thread_lock" in state  # a flag: was there one to make anew
                return state

            def __setstate__(self, state):
                self.__dict__.update(state)
                if self.__dict__.pop("_thread_lock", False):
                    self._thread_lock = threading.Lock()

        PicklableNSGAIISampler.__module__ = __name__
        PicklableNSGAIISampler.__qualname__ = "PicklableNSGAIISampler"
        _MADE["nsga2"] = PicklableNSGAIISampler
    return _MADE["nsga2"]


def __getattr__(name: str):
    if name == "PicklableNSGAIISampler":
        return picklable_nsga2()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_sampler("tpe", Sampler(_tpe))
register_sampler("random", Sampler(_random))
register_sampler("grid", Sampler(_grid, finite_space=True))
register_sampler("cmaes", Sampler(_cmaes))
register_sampler("nsga2", Sampler(_nsga2, objectives=2))


def make_sampler(name: str, study: Study):
    """The Optuna sampler ``name`` for ``study`` (a ``ValueError`` listing the names if unknown)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name].build(study)


__all__ = ["SAMPLERS", "Sampler", "make_sampler", "register_sampler"]
