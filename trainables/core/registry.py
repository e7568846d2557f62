"""One registry pattern for every selectable component (timm style).

A registry maps a name to a builder. A builder's *keyword-only* parameters are the config
fields it uses, spelled exactly like ``TrainConfig`` fields; its positional parameters are
what the trainer hands it at build time (the parameters to optimize, the feature width, ...).
So the signature is the one declaration of "which fields act for this choice": validation
(``config.acting_fields``), the CLI's choices and ``build`` all read it, and nothing copies
names by hand. Builders never take ``**kwargs``: a field they do not name cannot reach them.

    @register("optimizer", "sgd")
    def sgd(params, *, lr, momentum, nesterov, weight_decay): ...

A kind exists once something registers under it (``kinds()`` lists them: dataset, corruption, backbone, head,
loss, optimizer, ...). The modules that register are named once, in ``COMPONENTS``, and loaded like plugins
(entry points): ``registry()``, ``kinds()`` and ``build()`` import them on first use, so a registry is whole
wherever a component is built, and a process that only validates (``search validate``) imports none of them:
it reads the same names and fields from ``trainables.core.catalog``. ``trainables.families`` and
``spaces.samplers`` keep registries of the same class.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping


class Registry(Mapping[str, Any]):
    """Name -> builder (or a plain value, e.g. a ``DatasetInfo``), in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None):
        """``@registry.register("name")`` or ``registry.register("name", obj)``; re-registering replaces."""

        def wrap(o):
            if callable(o) and not isinstance(o, type):
                _check_signature(self.kind, name, o)
            self._entries[name] = o
            return o

        return wrap(obj) if obj is not None else wrap

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str, default: Any = None) -> Any:  # Mapping.get, kept explicit for readers
        return self._entries.get(name, default)

    def lookup(self, name: str) -> Any:
        """The entry, or a ``ValueError`` listing the valid names."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self._entries)}")
        return self._entries[name]

    def fields(self, name: str) -> tuple[str, ...]:
        """The config fields the entry's builder declares (its keyword-only parameters)."""
        return config_fields(self.lookup(name))

    def all_fields(self) -> set[str]:
        return {f for name in self._entries for f in self.fields(name)}

    def __getitem__(self, name: str) -> Any:
        return self._entries[name]

    def __setitem__(self, name: str, obj: Any) -> None:  # monkeypatch.setitem in tests
        self.register(name, obj)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


@dataclass(frozen=True)
class Declared:
    """A builder as ``trainables.core.catalog`` records it: the config fields it declares, without its module."""

    fields: tuple[str, ...]


def config_fields(builder: Any) -> tuple[str, ...]:
    """Keyword-only parameter names of a builder (a non-callable entry declares none)."""
    if isinstance(builder, Declared):
        return builder.fields
    if not callable(builder) or isinstance(builder, type):
        return ()
    return tuple(p.name for p in _parameters(builder) if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _parameters(fn: Callable) -> list[inspect.Parameter]:
    """A callable's parameters; none for a builtin without a signature (``torch.abs``): it declares no field."""
    try:
        return list(inspect.signature(fn).parameters.values())
    except (ValueError, TypeError):
        return []


def _check_signature(kind: str, name: str, fn: Callable) -> None:
    for p in _parameters(fn):
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{kind} '{name}': a builder declares the config fields it uses; no **{p.name}")


REGISTRIES: dict[str, Registry] = {}  # kind -> its registry, created by the first registration

# The modules of trainables.core that register components: the one list of them (the plugin table).
COMPONENTS = ("corruptions", "crossdomain", "data", "gaussian_head", "landscape", "losses", "models", "optim",
              "pretrained", "robustness", "shakeshake", "transfer")
_state = {"loaded": False, "loading": False}


def load_components() -> None:
    """Import every module in ``COMPONENTS`` once (they register as they import): the registries are then whole."""
    if _state["loaded"] or _state["loading"]:
        return
    _state["loading"] = True
    try:
        for module in COMPONENTS:
            importlib.import_module(f"{__package__}.{module}")
        _state["loaded"] = True
    finally:
        _state["loading"] = False


def loaded() -> bool:
    """Whether every registering module has been loaded (the live registries are then the whole truth)."""
    return _state["loaded"]


def kinds() -> tuple[str, ...]:
    load_components()
    return tuple(REGISTRIES)


def registry(kind: str) -> Registry:
    load_components()
    if kind not in REGISTRIES:
        raise ValueError(f"unknown registry kind '{kind}'; choose one of: {', '.join(REGISTRIES)}")
    return REGISTRIES[kind]


def declare(kind: str, entries: Mapping[str, Any] | None = None) -> Registry:
    """The registry of ``kind``, created on first use: the owning module's handle (``LOSSES = declare("loss")``);
    ``entries`` registers a name -> implementation table at once (``declare("pgd_start", {"random": True, ...})``)."""
    reg = REGISTRIES.setdefault(kind, Registry(kind))
    for name, obj in (entries or {}).items():
        reg.register(name, obj)
    return reg


def register(kind: str, name: str, obj: Any = None):
    """The decorator every component uses: ``@register("loss", "focal")``."""
    return declare(kind).register(name, obj)


def build(kind: str, name: str, cfg: Any, *args, **given) -> Any:
    """Call the builder ``name`` of ``kind`` with ``args`` and the config fields it declares.

    ``given`` replaces a declared field by an already-built value (a backbone declares
    ``activation`` and receives the activation factory built from the ``activation`` registry).
    """
    fn = registry(kind).lookup(name)
    kwargs = {f: given[f] if f in given else getattr(cfg, f) for f in config_fields(fn)}
    return fn(*args, **kwargs)


__all__ = ["Registry", "REGISTRIES", "COMPONENTS", "Declared", "kinds", "declare", "register", "registry", "build",
           "config_fields", "load_components", "loaded"]
