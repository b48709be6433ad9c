"""One trace per model, reused while nothing the trace depends on has changed.

A ``torch.fx`` trace bakes in the Python-level state of a model: ``if self.training``, a float
attribute, which tensors are attributes, which submodules exist, a forward set on an instance.
The cache key is therefore every attribute of every module, compared by identity: the names in
each module's ``__dict__``, ``_parameters``, ``_buffers`` and ``_modules`` and the ``id`` of each
value, and likewise the attributes of its classes below ``nn.Module`` (a ``forward`` patched onto
a class). ``.eval()`` stores another bool, ``model.scale = 3.0`` another float, a replaced buffer
another tensor: each changes an ``id``, so the model is traced again.

An ``id`` identifies an object only while it is alive, so the cache keeps what it compared:
weak references to the values that allow them (tensors, modules, functions, hook dicts; when
one dies, its ``id`` may be reused, so its callback retires the entry) and strong ones to the
rest (numbers, strings, tuples, plain dicts), whose ids cannot be reused while held.

Hooks do not change the key (hook dicts are filled in place); they are checked on every call.

A repeat call compares without building the key: the entry keeps the dicts it was built from
(each module's ``__dict__``, parameters, buffers, children and forward-hook dicts, and its classes'
namespaces) and the names, values and sizes they held, and checks them in a few flat passes
(:func:`_unchanged`): values by identity (``operator.is_``, never ``==``), those of the root's own
dicts by ``id`` (the entry must not hold what the root holds: it could hold the root). If every
dict still holds the same names bound to the same objects, the walk would reach the same modules
and build the same key; on any difference the key is built and compared as before.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from torch import nn
from torch.nn.modules import module as torch_module

from kronlib.graph import TracedModel, check_hooks, trace

__all__ = ["traced"]


@dataclass
class _Snapshot:
    """What :func:`_unchanged` compares: the dicts behind the key and what they held.

    The root model's own dicts are not kept (they are read from the model at each call, so that
    the cache never holds its own key alive); ``holders`` are those of the other modules and of
    the classes, in the order of the walk, and ``views`` their live ``values()``.
    """

    root: type  # the model's class
    modules: list[nn.Module]  # every other module met
    kinds: list[type]  # the class of each
    classes: list[type]  # every class met (the root's included)
    mros: list[tuple[type, ...]]  # the method resolution order of each
    holders: list[Any]
    views: list[Any]
    sizes: list[int]  # len of every holder, the root's six first
    names: list[Any]  # every key of every holder, flattened
    ids: list[int]  # the id of every value of the root's own dicts, flattened
    values: list[Any]  # every value of the other holders, flattened (held by them anyway)


@dataclass
class _Entry:
    key: list[Any]
    traced: TracedModel
    snapshot: _Snapshot
    held: list[Any] = field(default_factory=list)  # refs keeping the compared ids unique
    valid: bool = True  # turned off when a weakly held value dies (its id may be reused)

    def expire(self, _ref: weakref.ref) -> None:
        """Weak reference callback: a compared value died."""
        self.valid = False


_TRACES: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def _walk(model: nn.Module) -> Iterator[tuple[nn.Module, bool]]:
    """Every module reachable from ``model`` once, each with whether its class is new.

    The walk of the key and of its snapshot alike: depth first through ``_modules`` (a module
    placed twice is met once), and ``True`` the first time a module's class is met.
    """
    stack: list[nn.Module] = [model]
    seen: set[int] = set()
    kinds: set[type] = set()
    while stack:
        module = stack.pop()
        if id(module) in seen:  # a shared module: its state is in already
            continue
        seen.add(id(module))
        kind = type(module)
        yield module, kind not in kinds
        kinds.add(kind)
        stack += [m for m in module._modules.values() if m is not None]


def _below_module(kind: type) -> tuple[type, ...]:
    """The classes of ``kind``'s MRO below ``nn.Module`` (where a forward may be patched)."""
    return kind.__mro__[: kind.__mro__.index(nn.Module)]


def _fingerprint(model: nn.Module, values: list[Any] | None = None) -> list[Any]:
    """Names, types and ids of every module's state (tuples of strings, types and ints).

    With ``values``, also collect there the objects whose ids are in the key. Refuses forward
    hooks, which a trace would not run.
    """
    key: list[Any] = []
    hooked = False
    for module, new_kind in _walk(model):
        hooked = hooked or bool(module._forward_hooks or module._forward_pre_hooks)
        kind, own = type(module), module.__dict__
        params, buffers, children = module._parameters, module._buffers, module._modules
        key.append(
            (
                kind,
                tuple(own),
                tuple(map(id, own.values())),
                tuple(params),
                tuple(map(id, params.values())),
                tuple(buffers),
                tuple(map(id, buffers.values())),
                tuple(children),
                tuple(map(id, children.values())),
            )
        )
        holders: list = [own, params, buffers, children] if values is not None else []
        if new_kind:  # the code of its classes (a forward patched onto a class)
            for klass in _below_module(kind):
                namespace = vars(klass)
                key.append((tuple(namespace), tuple(map(id, namespace.values()))))
                holders.append(namespace)
        if values is not None:
            for holder in holders:
                values += holder.values()
    if hooked or torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        check_hooks(model)  # raises, naming the module
    return key


_values = operator.methodcaller("values")
_mro = operator.attrgetter("__mro__")


def _own_dicts(module: nn.Module) -> list[Any]:
    """A module's state dicts the key is built from, and its forward-hook dicts."""
    return [
        module.__dict__,
        module._parameters,
        module._buffers,
        module._modules,
        module._forward_hooks,
        module._forward_pre_hooks,
    ]


def _snapshot(model: nn.Module) -> _Snapshot:
    """The dicts behind ``model``'s key and what they hold now (a hook-free model)."""
    holders: list[Any] = []
    modules: list[nn.Module] = []
    classes: list[type] = []
    for module, new_kind in _walk(model):
        if module is not model:
            holders += _own_dicts(module)
            modules.append(module)
        if new_kind:
            classes.append(type(module))
            holders += [vars(k) for k in _below_module(type(module))]
    every = _own_dicts(model) + holders
    return _Snapshot(
        type(model),
        modules,
        list(map(type, modules)),
        classes,
        list(map(_mro, classes)),
        holders,
        list(map(_values, holders)),
        list(map(len, every)),
        list(chain.from_iterable(every)),
        list(map(id, chain.from_iterable(map(_values, every[:6])))),
        list(chain.from_iterable(map(_values, holders))),
    )


def _unchanged(model: nn.Module, snapshot: _Snapshot) -> bool:
    """Whether every dict of the snapshot holds the same names bound to the same objects.

    Then the walk of :func:`_fingerprint` would meet the same modules, classes and values and
    build the same key. The forward-hook dicts were empty when the snapshot was taken (a model
    with hooks is refused), so a hook added since changes a size.
    """
    own = _own_dicts(model)
    return (
        type(model) is snapshot.root
        and list(map(type, snapshot.modules)) == snapshot.kinds
        and list(map(_mro, snapshot.classes)) == snapshot.mros
        and list(map(len, own + snapshot.holders)) == snapshot.sizes
        and list(chain(chain.from_iterable(own), *snapshot.holders)) == snapshot.names
        and list(map(id, chain(*map(_values, own)))) == snapshot.ids
        and all(map(operator.is_, chain(*snapshot.views), snapshot.values))
    )


def traced(model: nn.Module) -> TracedModel:
    """The model's trace, reused while nothing it depends on has changed.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        UnsupportedLayerError: for hooks, or a model that cannot be traced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    entry = _TRACES.get(model)
    if entry is not None and entry.valid:
        global_hooks = torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
        if not global_hooks and _unchanged(model, entry.snapshot):
            return entry.traced
        key = _fingerprint(model)
        if entry.key == key:
            entry.snapshot = _snapshot(model)
            return entry.traced
    values: list[Any] = []
    key = _fingerprint(model, values)
    entry = _Entry(key, trace(model), _snapshot(model))
    for value in values:
        if value is model:  # the cache's own key: never held by its entry
            continue
        if type(value).__weakrefoffset__:
            entry.held.append(weakref.ref(value, entry.expire))
        else:
            entry.held.append(value)
    _TRACES[model] = entry
    return entry.traced
