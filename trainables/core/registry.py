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
loss, optimizer, ...); the modules that register are imported by ``trainables/core/__init__.py``,
so importing anything from the core registers every component. ``trainables.families`` and
``spaces.samplers`` keep registries of the same class.
"""

from __future__ import annotations

import inspect
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


def config_fields(builder: Any) -> tuple[str, ...]:
    """Keyword-only parameter names of a builder (a non-callable entry declares none)."""
    if not callable(builder) or isinstance(builder, type):
        return ()
    params = inspect.signature(builder).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_signature(kind: str, name: str, fn: Callable) -> None:
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{kind} '{name}': a builder declares the config fields it uses; no **{p.name}")


REGISTRIES: dict[str, Registry] = {}  # kind -> its registry, created by the first registration


def kinds() -> tuple[str, ...]:
    return tuple(REGISTRIES)


def registry(kind: str) -> Registry:
    if kind not in REGISTRIES:
        raise ValueError(f"unknown registry kind '{kind}'; choose one of: {', '.join(REGISTRIES)}")
    return REGISTRIES[kind]


def declare(kind: str) -> Registry:
    """The registry of ``kind``, created on first use: the owning module's handle (``LOSSES = declare("loss")``)."""
    return REGISTRIES.setdefault(kind, Registry(kind))


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


__all__ = ["Registry", "REGISTRIES", "kinds", "declare", "register", "registry", "build", "config_fields"]
