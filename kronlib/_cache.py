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
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.nn.modules import module as torch_module

from kronlib.graph import TracedModel, check_hooks, trace

__all__ = ["traced"]


@dataclass
class _Entry:
    key: list[Any]
    traced: TracedModel
    held: list[Any] = field(default_factory=list)  # refs keeping the compared ids unique
    valid: bool = True  # turned off when a weakly held value dies (its id may be reused)

    def expire(self, _ref: weakref.ref) -> None:
        """Weak reference callback: a compared value died."""
        self.valid = False


_TRACES: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module, values: list[Any] | None = None) -> list[Any]:
    """Names, types and ids of every module's state (tuples of strings, types and ints).

    With ``values``, also collect there the objects whose ids are in the key. Refuses forward
    hooks, which a trace would not run.
    """
    key: list[Any] = []
    hooked = False
    stack: list[nn.Module] = [model]
    seen: set[int] = set()
    classes: set[type] = set()
    while stack:
        module = stack.pop()
        if id(module) in seen:  # a shared module: its state is in already
            continue
        seen.add(id(module))
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
        if kind not in classes:  # the code of its classes (a forward patched onto a class)
            classes.add(kind)
            for klass in kind.__mro__[: kind.__mro__.index(nn.Module)]:
                namespace = vars(klass)
                key.append((tuple(namespace), tuple(map(id, namespace.values()))))
                holders.append(namespace)
        if values is not None:
            for holder in holders:
                values += holder.values()
        stack += [m for m in children.values() if m is not None]
    if hooked or torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        check_hooks(model)  # raises, naming the module
    return key


def traced(model: nn.Module) -> TracedModel:
    """The model's trace, reused while nothing it depends on has changed.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        UnsupportedLayerError: for hooks, or a model that cannot be traced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    key = _fingerprint(model)
    entry = _TRACES.get(model)
    if entry is not None and entry.valid and entry.key == key:
        return entry.traced
    values: list[Any] = []
    key = _fingerprint(model, values)
    entry = _Entry(key, trace(model))
    for value in values:
        if value is model:  # the cache's own key: never held by its entry
            continue
        if type(value).__weakrefoffset__:
            entry.held.append(weakref.ref(value, entry.expire))
        else:
            entry.held.append(value)
    _TRACES[model] = entry
    return entry.traced
