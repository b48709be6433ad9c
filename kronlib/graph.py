"""A model as a graph of rules: trace once, linearise at a point, compose either way.

``torch.fx`` symbolic tracing turns a model (a chain, a ResNet, a SqueezeNet, …) into a graph of
operations. Every operation that depends on the input is bound to its rule
(:mod:`kronlib.rules`); operations on constants (weights, buffers) are evaluated; shape queries
(``x.size(0)``) are read off the values. :func:`linearise` runs the graph once at a point and
keeps each rule's :class:`~kronlib.rules.Linearised`; :func:`pull_back` then sends a batch of rows
from any node back to the input (the reverse composition) and :func:`push_forward` sends a batch
of input kernels forward (the Kronecker composition).
"""

from __future__ import annotations

import dataclasses
import operator
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from kronlib.rules import (
    Linearised,
    Policy,
    Rule,
    UnsupportedLayerError,
    Variable,
    computes_attributes,
    rule_for_function,
    rule_for_method,
    rule_for_module,
    why_unsupported,
)

__all__ = [
    "Linearisation",
    "Step",
    "TracedModel",
    "affine_offset",
    "linearise",
    "pull_back",
    "push_forward",
    "trace",
]

_META_METHODS = {"size", "dim", "numel", "ndimension", "nelement"}
_META_FUNCTIONS = {getattr, len, operator.getitem}
# attributes of a tensor that describe it without being it (x.shape, x.dtype)
_META_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "layout"}
# tensors made from an input's metadata only: constants as far as the derivative goes
_LIKE_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like}
_GRAD_MODE = {torch._C._set_grad_enabled}


def check_hooks(model: nn.Module) -> None:
    """Refuse a model whose forward hooks kronlib would not run (its own or global ones)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        raise UnsupportedLayerError(
            "global forward hooks are registered (register_module_forward_hook), which "
            "kronlib would not run: remove them first"
        )
    for name, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            raise UnsupportedLayerError(
                f"{name or type(model).__name__} has forward hooks, which kronlib would not "
                "run: remove them first"
            )


class _Proxy(fx.Proxy):
    """fx's proxy, with augmented assignment recorded as what it is on a tensor.

    Plain fx turns ``y += x`` into ``y = y + x``, a new value, although on a tensor it writes
    into ``y`` (and into every name bound to the same tensor). Recorded as ``operator.iadd``,
    the engine sees the write and lets later uses of ``y`` read its result.
    """

    def __iadd__(self, other):
        return self.tracer.create_proxy("call_function", operator.iadd, (self, other), {})

    def __isub__(self, other):
        return self.tracer.create_proxy("call_function", operator.isub, (self, other), {})

    def __imul__(self, other):
        return self.tracer.create_proxy("call_function", operator.imul, (self, other), {})

    def __itruediv__(self, other):
        return self.tracer.create_proxy("call_function", operator.itruediv, (self, other), {})


class _Tracer(fx.Tracer):
    """A tracer that stops at the layers kronlib knows.

    Layers with a rule are leaves; torch.nn layers without one stay leaves too (to be refused by
    name); every other module is traced into.
    """

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if rule_for_module(m) is not None:
            return True
        return m.__module__.startswith("torch.nn") and not isinstance(m, nn.Sequential)


@dataclass
class TracedModel:
    """A traced model: the fx graph and the names a caller may use for its nodes.

    Attributes:
        module: the ``fx.GraphModule``.
        nodes: the graph's nodes in order.
        names: user-facing name → node, for every operation that can depend on the input:
            a module's dotted name where the module is called once (``"layer1.0.conv1"``), the
            fx node name otherwise (``"add_3"``, ``"flatten"``).
        layers: ``call_module`` node → its module and the module's rule type (or ``None``).
        root: a weak reference to the traced model: constants (``get_attr``) are read from it
            live, not from the trace's copy.
        inputs: node → the nodes it reads (fx's ``all_input_nodes``, computed once).
        in_place: the nodes that write into their first argument.
        bound: ``call_module`` node → its rule bound to the module and checked, filled on first
            use (a trace stands for the model's state when it was made: kronlib.virtual
            traces again when that state changes).
        chain: for a plain chain of layers (each ``call_module`` node reads only the one before
            it, every layer has a rule, no in-place layer writes into a view), its layer nodes
            from input to output: :func:`linearise` then runs them in a loop, without the graph
            walk. ``None`` otherwise.
        plans: for a chain, its compiled plans (:mod:`kronlib._plan`) by input layout and
            policy, made after a first call at that layout took the general path.
    """

    module: fx.GraphModule
    nodes: list[fx.Node]
    names: dict[str, fx.Node] = field(default_factory=dict)
    layers: dict[fx.Node, tuple[nn.Module, type[Rule] | None]] = field(default_factory=dict)
    root: Callable[[], nn.Module | None] = lambda: None
    inputs: dict[fx.Node, tuple[fx.Node, ...]] = field(default_factory=dict)
    in_place: frozenset[fx.Node] = frozenset()
    bound: dict[fx.Node, Rule] = field(default_factory=dict)
    chain: list[fx.Node] | None = None
    plans: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @property
    def output(self) -> fx.Node | None:
        """The node the model returns (``None`` if it returns something else)."""
        returned = self.nodes[-1].args[0]
        return returned if isinstance(returned, fx.Node) else None

    def node(self, name: str, argument: str = "layer") -> fx.Node:
        """The node called ``name``, or a ValueError listing the names."""
        if not isinstance(name, str):
            raise TypeError(f"{argument} must be a layer name (str), got {type(name).__name__}")
        if name not in self.names:
            raise ValueError(
                f"{argument} must name an operation of the model, one of {list(self.names)}; "
                f"got {name!r}"
            )
        return self.names[name]

    def label(self, node: fx.Node) -> str:
        """How messages name a node: ``layer 'conv1' (Conv2d)``, ``operation 'add_1' (add)``."""
        name = next((k for k, v in self.names.items() if v is node), node.name)
        if node.op == "call_module":
            return f"layer {name!r} ({type(self.module.get_submodule(node.target)).__name__})"
        what = getattr(node.target, "__name__", str(node.target))
        return f"operation {name!r} ({what})"


def trace(model: nn.Module) -> TracedModel:
    """Trace ``model`` with ``torch.fx``, refusing what it cannot follow.

    Raises:
        UnsupportedLayerError: the model cannot be traced (data-dependent control flow), has
            hooks the engine would not run, or has several inputs or outputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_hooks(model)
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, … for untraceable code
        raise UnsupportedLayerError(
            f"{type(model).__name__} cannot be traced by torch.fx, so kronlib cannot follow its "
            f"forward ({type(error).__name__}: {error}); fx needs a forward without "
            "data-dependent control flow, whose modules are registered as submodules"
        ) from None
    gm = fx.GraphModule(tracer.root, graph)
    nodes = list(gm.graph.nodes)
    required = [n for n in nodes if n.op == "placeholder" and not n.args]
    if len(required) != 1:
        raise UnsupportedLayerError(
            f"the model must take one input tensor, its forward requires {len(required)}"
        )
    for n in nodes:
        if n.op == "call_function" and n.target in _GRAD_MODE:
            raise UnsupportedLayerError(
                f"{type(model).__name__}'s forward switches gradient tracking (torch.no_grad "
                "or enable_grad): its Jacobian is then not its virtual matrix"
            )
    calls: dict[str, list[fx.Node]] = {}
    for n in nodes:
        if n.op == "call_module":
            calls.setdefault(n.target, []).append(n)
    places = _sequential_places(model)
    names: dict[str, fx.Node] = {}
    for n in nodes:
        if n.op == "call_module":
            uses = calls[n.target]
            where = places.get(id(gm.get_submodule(n.target)), [])
            if len(uses) == 1:
                name = n.target
            elif len(where) == len(uses):  # placed in Sequentials, called where it is placed
                name = where[uses.index(n)]
            else:  # one name per call: "conv:1", "conv:2"
                name = f"{n.target}:{uses.index(n) + 1}"
            names[name] = n
    for n in nodes:
        if n.op in ("call_function", "call_method"):
            name = n.name if n.name not in names else f"{n.name}:op"
            names[name] = n
    layers = {}
    for n in nodes:
        if n.op == "call_module":
            module = gm.get_submodule(n.target)
            layers[n] = (module, rule_for_module(module))
    traced = TracedModel(gm, nodes, names, layers, weakref.ref(model))
    traced.inputs = {n: tuple(n.all_input_nodes) for n in nodes}
    traced.in_place = frozenset(n for n in nodes if _writes_in_place(traced, n))
    traced.chain = _plain_chain(traced)
    return traced


def _sequential_places(model: nn.Module) -> dict[int, list[str]]:
    """``id(module) → names``, for modules placed only in ``nn.Sequential`` containers.

    Every place a module instance is registered, in the order of the walk (``_modules``, which
    keeps a module placed twice at both places, unlike ``named_modules``). A Sequential calls
    its children in that order, so a module placed twice in Sequentials, and called twice, is
    called at its places in turn: each call is named by its place (``"1"`` and ``"4"``, as
    :func:`kronlib.virtual.chain` names them). Modules placed anywhere else are left out.
    """
    places: dict[int, list[str]] = {}
    elsewhere: set[int] = set()

    def walk(module: nn.Module, prefix: str, seen: frozenset[int]) -> None:
        in_order = type(module).forward is nn.Sequential.forward
        for name, child in module._modules.items():
            if child is None or id(child) in seen:
                continue
            (places if in_order else {}).setdefault(id(child), []).append(prefix + name)
            if not in_order:
                elsewhere.add(id(child))
            walk(child, f"{prefix}{name}.", seen | {id(child)})

    walk(model, "", frozenset({id(model)}))
    return {key: names for key, names in places.items() if key not in elsewhere}


def _plain_chain(traced: TracedModel) -> list[fx.Node] | None:
    """The layer nodes of a plain chain ``input → layer → … → layer → output``, or ``None``.

    Each layer must be a module with a rule, called on the previous node alone; an in-place
    layer must not write into a view (the general walk refuses that, naming it).
    """
    nodes = traced.nodes
    if len(nodes) < 3 or nodes[0].op != "placeholder" or nodes[0].args:
        return None
    layers, previous = nodes[1:-1], nodes[0]
    for node in layers:
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            return None
        if traced.layers[node][1] is None:
            return None
        if node in traced.in_place and _is_view(traced, previous):
            return None
        previous = node
    if nodes[-1].op != "output" or nodes[-1].args != (previous,):
        return None
    return layers


@dataclass(frozen=True)
class Step:
    """One input-dependent operation at the point: its bound rule, linearisation and inputs."""

    rule: Rule
    linearised: Linearised
    inputs: list[fx.Node]


@dataclass
class Linearisation:
    """A traced model linearised at one point.

    Attributes:
        traced: the :class:`TracedModel`.
        values: node → its value at the point (``(1, …)`` tensors for input-dependent nodes).
        steps: input-dependent tensor node → its :class:`Step`.
        input: the placeholder node; ``output``: the node the model returns.
        chain: whether the steps are a plain chain, in order, each reading the one before
            (:func:`pull_back` then sends rows back in a loop).
    """

    traced: TracedModel
    values: dict[fx.Node, Any]
    steps: dict[fx.Node, Step]
    input: fx.Node
    output: fx.Node
    chain: bool = False

    @property
    def approximate(self) -> bool:
        """Whether some step is an approximation (see :attr:`Linearised.exact`)."""
        return not all(step.linearised.exact for step in self.steps.values())


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, tuple | list):
        return type(value)(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(value)


def _flat(value: Any) -> Iterable[Any]:
    if isinstance(value, tuple | list):
        for v in value:
            yield from _flat(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flat(v)
    else:
        yield value


def _bind(traced: TracedModel, node: fx.Node, args, kwargs) -> tuple[list[Variable], Rule]:
    gm = traced.module
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        rule = rule_for_module(module)
        if rule is None:
            raise UnsupportedLayerError(
                f"{traced.label(node)} is not supported: {why_unsupported('module', module)}"
            )
        variables = [a for a in _flat((args, kwargs)) if isinstance(a, Variable)]
        return variables, rule.from_module(module)
    kind = "function" if node.op == "call_function" else "method"
    finder = rule_for_function if kind == "function" else rule_for_method
    rule = finder(node.target)
    if rule is None:
        raise UnsupportedLayerError(
            f"{traced.label(node)} is not supported: {why_unsupported(kind, node.target)}"
        )
    try:
        return rule.from_call(*args, **kwargs)
    except TypeError as error:
        raise UnsupportedLayerError(
            f"{traced.label(node)} is called in a way kronlib does not read: {error}"
        ) from None


def linearise(
    traced: TracedModel, point: torch.Tensor, policy: Policy, until: fx.Node | None = None
) -> Linearisation:
    """Run the traced model at ``point`` (no batch axis), binding and linearising every step.

    With ``until``, stop after that node (what comes later is not needed for its rows).

    Raises:
        UnsupportedLayerError: naming the first operation that cannot be represented and why.
        ValueError: when ``point`` does not fit the model (the operation and torch's reason).
    """
    if traced.chain is not None:
        return _linearise_chain(traced, traced.chain, point, policy, until)
    gm, root = traced.module, traced.root()
    values: dict[fx.Node, Any] = {}
    tensors: set[fx.Node] = set()  # input-dependent tensors: the input and every step
    steps: dict[fx.Node, Step] = {}
    alias: dict[fx.Node, fx.Node] = {}  # a tensor an in-place operation wrote into → that op
    output = placeholder = None

    def look(a: Any) -> Any:
        return values[alias.get(a, a)] if isinstance(a, fx.Node) else a

    with torch.no_grad():
        for node in traced.nodes:
            op = node.op
            if op == "placeholder":
                if node.args:  # an argument with a default value: a constant
                    values[node] = node.args[0]
                    continue
                placeholder = node
                values[node] = point[None]
                tensors.add(node)
                continue
            if op == "output":
                returned = node.args[0]
                output = alias.get(returned, returned) if isinstance(returned, fx.Node) else None
                if output not in tensors:
                    raise UnsupportedLayerError(
                        "the model must return one tensor that depends on its input"
                    )
                continue
            if op == "get_attr":
                values[node] = _constant(_attribute(root or gm, node.target), point)
                continue
            rule = traced.bound.get(node)
            if rule is not None and node not in traced.in_place:
                # the common case, a layer bound once per trace, called on one tensor
                (source,) = node.args
                source = alias.get(source, source)
                if source in tensors:
                    lin = _linearised(traced, node, rule, [values[source]], policy, point)
                    values[node] = lin.value
                    tensors.add(node)
                    steps[node] = Step(rule, lin, [source])
                    if node is until:
                        output = traced.output
                        break
                    continue
            inputs = traced.inputs[node]
            if alias:
                inputs = [alias.get(a, a) for a in inputs]
            if not any(a in tensors for a in inputs) or _is_meta(node, tensors):
                args, kwargs = _map(node.args, look), _map(node.kwargs, look)
                values[node] = _run(gm, node, args, kwargs)
                continue
            # an input-dependent tensor operation: its rule
            mutated = _mutated(traced, node, tensors, alias)
            step = _step(traced, node, values, tensors, alias)
            lin = _linearised(
                traced, node, step.rule, [values[i] for i in step.inputs], policy, point
            )
            if policy.exact and node.op != "call_module":
                # the value as the model's own operation computes it (the same rounding, so
                # that later masks and pool picks fall exactly as in the model)
                args, kwargs = _map(node.args, look), _map(node.kwargs, look)
                if mutated is not None:
                    args = (args[0].clone(), *args[1:])
                real = _run(gm, node, args, kwargs)
                if real.shape != lin.value.shape:
                    raise ValueError(
                        f"{traced.label(node)}: the rule's output {tuple(lin.value.shape)} is "
                        f"not the operation's {tuple(real.shape)}"
                    )
                lin = dataclasses.replace(lin, value=real)
            values[node] = lin.value
            tensors.add(node)
            steps[node] = Step(step.rule, lin, step.inputs)
            if mutated is not None:
                alias[mutated] = node
            if node is until:
                output = traced.output
                break
    return Linearisation(traced, values, steps, placeholder, output)


def _linearise_chain(
    traced: TracedModel,
    layers: list[fx.Node],
    point: torch.Tensor,
    policy: Policy,
    until: fx.Node | None,
) -> Linearisation:
    """:func:`linearise` for a plain chain: each layer's rule on the previous layer's value.

    What the graph walk does for a layer called on one input-dependent tensor, without the walk:
    the rule is bound and checked once per trace (:func:`_bound_layer`), the value is the rule's
    (as the walk takes it for modules), an in-place layer reads and writes nothing of the
    caller's (its rule computes a new value).
    """
    placeholder = traced.nodes[0]
    value = point[None]
    values: dict[fx.Node, Any] = {placeholder: value}
    steps: dict[fx.Node, Step] = {}
    source = placeholder
    with torch.no_grad():
        for node in layers:
            rule = traced.bound.get(node) or _bound_layer(traced, node)
            lin = _linearised(traced, node, rule, [value], policy, point)
            value = values[node] = lin.value
            steps[node] = Step(rule, lin, [source])
            if node is until:
                break
            source = node
    return Linearisation(traced, values, steps, placeholder, traced.output, chain=True)


def _bound_layer(traced: TracedModel, node: fx.Node) -> Rule:
    """Bind the rule of a layer node to its module, check it and keep it for the trace.

    Not kept for a module whose attributes are computed when read (a parametrized weight:
    :func:`kronlib.rules.computes_attributes`): it is bound again at each call.
    """
    module, rule_type = traced.layers[node]
    if rule_type is None:
        raise UnsupportedLayerError(
            f"{traced.label(node)} is not supported: {why_unsupported('module', module)}"
        )
    rule = rule_type.from_module(module)
    _check(traced, node, rule)
    if not computes_attributes(module):
        traced.bound[node] = rule
    return rule


def _linearised(
    traced: TracedModel,
    node: fx.Node,
    rule: Rule,
    inputs: list[torch.Tensor],
    policy: Policy,
    point: torch.Tensor,
) -> Linearised:
    """``rule.linearise(inputs, policy)``, its errors naming the operation."""
    try:
        return rule.linearise(inputs, policy)
    except UnsupportedLayerError as error:
        raise UnsupportedLayerError(f"{traced.label(node)} is not supported: {error}") from None
    except (RuntimeError, ValueError) as error:
        shape = tuple(point.shape)
        raise ValueError(
            f"an input of shape {shape} does not fit {traced.label(node)}: {error}"
        ) from None


# in-place functions (their first argument is written into) and where ``inplace`` sits
_IN_PLACE = {
    F.relu_,
    torch.relu_,
    F.leaky_relu_,
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
}
_INPLACE_POSITION = {F.relu: 1, F.leaky_relu: 2, F.dropout: 3, F.dropout2d: 3, F.hardtanh: 3}
_VIEWS = {"view", "reshape", "flatten", "contiguous", "expand", "squeeze", "unsqueeze"}


def _writes_in_place(traced: TracedModel, node: fx.Node) -> bool:
    if node.op == "call_module":
        return bool(getattr(traced.layers[node][0], "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op == "call_function":
        if node.target in _IN_PLACE or node.kwargs.get("inplace") is True:
            return True
        position = _INPLACE_POSITION.get(node.target)
        return position is not None and len(node.args) > position and node.args[position] is True
    return False


def _is_view(traced: TracedModel, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(traced.layers[node][0], nn.Flatten | nn.Identity)
    if node.op == "call_method":
        return node.target in _VIEWS
    return node.op == "call_function" and node.target in (torch.flatten, torch.reshape)


def _mutated(traced: TracedModel, node: fx.Node, tensors: set, alias: dict) -> fx.Node | None:
    """The input tensor an in-place operation writes into (later uses then see its result).

    Raises:
        UnsupportedLayerError: when that tensor shares memory with a view of it, whose later
            uses kronlib could not follow.
    """
    if node not in traced.in_place or not node.args:
        return None
    target = node.args[0]
    if not isinstance(target, fx.Node):
        return None
    target = alias.get(target, target)
    if target not in tensors:
        return None
    sharing = [u for u in target.users if u is not node and _is_view(traced, u)]
    if _is_view(traced, target) or sharing:
        raise UnsupportedLayerError(
            f"{traced.label(node)} is not supported: it writes in place into a tensor that "
            "shares memory with a view of it, whose later uses kronlib cannot follow"
        )
    return target


def _constant(value: Any, point: torch.Tensor) -> Any:
    """A constant of the model, floating tensors in the computation's dtype."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(dtype=point.dtype, device=point.device)
    return value


@dataclass(frozen=True)
class _Bound:
    rule: Rule
    inputs: list[fx.Node]


def _step(
    traced: TracedModel, node: fx.Node, values: dict, tensors: set[fx.Node], alias: dict
) -> _Bound:
    """Bind the rule of an input-dependent operation and check that it can represent it."""
    if node.op == "call_module" and len(node.args) == 1 and not node.kwargs:
        # the common case, a layer called on one tensor: no argument rewriting
        (source,) = node.args
        source = alias.get(source, source)
        if source in tensors:
            rule = traced.bound.get(node)
            if rule is None and traced.layers[node][1] is not None:
                rule = _bound_layer(traced, node)
            if rule is not None:
                return _Bound(rule, [source])
    resolved = {a: alias.get(a, a) for a in node.all_input_nodes}
    wrapped = {a: Variable(values[r]) for a, r in resolved.items() if r in tensors}
    by_id = {id(v): resolved[a] for a, v in wrapped.items()}
    args = _map(node.args, lambda a: _arg(a, values, wrapped, resolved))
    kwargs = _map(node.kwargs, lambda a: _arg(a, values, wrapped, resolved))
    variables, rule = _bind(traced, node, args, kwargs)
    _check(traced, node, rule)
    returned = {id(v) for v in variables}
    ignored = [a for a, v in wrapped.items() if id(v) not in returned]
    if ignored or not variables:
        raise UnsupportedLayerError(
            f"{traced.label(node)} is not supported: an argument other than its input "
            f"depends on the input ({ignored[0].name if ignored else '?'}), so it is "
            "not linear in it"
        )
    return _Bound(rule, [by_id[id(v)] for v in variables])


def _check(traced: TracedModel, node: fx.Node, rule: Rule) -> None:
    reason = rule.why_not()
    if reason:
        raise UnsupportedLayerError(f"{traced.label(node)} is not supported: {reason}")


def _arg(a: Any, values: dict, wrapped: dict, resolved: dict) -> Any:
    if not isinstance(a, fx.Node):
        return a
    return wrapped.get(a, values[resolved.get(a, a)])


def _attribute(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _is_meta(node: fx.Node, tensors: set[fx.Node]) -> bool:
    """Whether ``node`` reads only the metadata of input tensors (a constant for J).

    Shape queries (``x.size(0)``, ``x.shape[1]``, ``x.dtype``) and tensors made from them
    (``torch.zeros_like(x)``) are read off the values, not linearised. Any other attribute
    of a tensor (``x.mT``) and indexing a tensor itself are operations (with no rule).
    """
    if node.op == "call_method":
        return node.target in _META_METHODS
    if node.op != "call_function":
        return False
    first = node.args[0] if node.args else None
    if node.target is getattr:
        return node.args[1] in _META_ATTRIBUTES or first not in tensors
    if node.target is operator.getitem or node.target is len:
        return first not in tensors
    return node.target in _LIKE_FUNCTIONS


def _run(gm: fx.GraphModule, node: fx.Node, args, kwargs) -> Any:
    """Evaluate an operation on constants (or a shape query) as the model would."""
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    obj, *rest = args
    return getattr(obj, node.target)(*rest, **kwargs)


def pull_back(
    lin: Linearisation,
    seeds: dict[fx.Node, torch.Tensor],
    *,
    at: Callable[[fx.Node, torch.Tensor], torch.Tensor] | None = None,
    edge: Callable[[fx.Node, int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Send batches of rows back to the input: the reverse composition.

    Args:
        lin: the model linearised at a point.
        seeds: node → ``(n, *node_shape)`` rows to start from (one-hot for plain rows).
        at: optional ``(node, cotangent) → cotangent`` applied to a node's summed rows before
            they go back through it (kronlib.virtual uses it to split rows by channel at a cut).
        edge: optional ``(node, i, cotangent) → cotangent`` applied to what goes back to the
            node's ``i``-th input (kronlib.virtual uses it to count residual branches).

    Returns:
        ``(n', *in_shape)``: the rows on the input (zero where nothing reaches it).
    """
    if lin.chain and at is None and edge is None and len(seeds) == 1:
        ((start, rows),) = seeds.items()
        if start is lin.input or start in lin.steps:
            return _pull_back_chain(lin, start, rows)
    pending = dict(seeds)
    # nodes whose pending rows are a tensor only this pass holds (not a seed, not shared with
    # another node, not a view): a step may overwrite those instead of allocating anew
    owned: set[fx.Node] = set()
    hooks = at is not None or edge is not None
    batch = next(iter(seeds.values())).shape[0]
    for node in reversed(lin.traced.nodes):
        if node not in pending or node is lin.input:
            continue
        cot = pending.pop(node)
        mine = node in owned and not hooks
        owned.discard(node)
        if at is not None:
            cot = at(node, cot)
        backs, fresh = lin.steps[node].linearised.pull(cot, mine)
        fresh = fresh and not hooks and len(backs) == 1
        for i, (source, back) in enumerate(zip(lin.steps[node].inputs, backs, strict=True)):
            if edge is not None:
                back = edge(node, i, back)
            if source in pending:
                pending[source] = pending[source] + back
                owned.add(source)
            else:
                pending[source] = back
                if fresh:
                    owned.add(source)
        batch = cot.shape[0]
    if lin.input in pending:
        return pending[lin.input]
    shape = lin.values[lin.input].shape[1:]
    return lin.values[lin.input].new_zeros(batch, *shape)


def _pull_back_chain(lin: Linearisation, start: fx.Node, rows: torch.Tensor) -> torch.Tensor:
    """:func:`pull_back` of one batch of rows along a plain chain, from ``start`` to the input.

    Rows ``(n, *start_shape)`` → ``(n, *in_shape)``. As in the general walk, a step may overwrite
    its rows only when they are a tensor this pass made (never the caller's seed).
    """
    layers = list(lin.steps)
    cot, owned = rows, False
    for node in reversed(layers[: layers.index(start) + 1] if start in lin.steps else []):
        (cot,), owned = lin.steps[node].linearised.pull(cot, owned)
    return cot


def affine_offset(lin: Linearisation, until: fx.Node) -> torch.Tensor:
    """``(1, *until_shape)``: the constant of the affine map from the input to ``until``.

    Each step adds its own constant (its value minus its linear part applied to its inputs'
    values); an approximate step (``exact=False``) adds none. For a model of exact steps this is
    ``value − J·x``; with approximations it is the offset of the approximate map.
    """
    offsets = {lin.input: torch.zeros_like(lin.values[lin.input])}
    for node in lin.traced.nodes:
        if node not in lin.steps:
            continue
        step = lin.steps[node]
        moved = step.linearised.forward([offsets[i] for i in step.inputs])
        if step.linearised.exact:
            at_values = step.linearised.forward([lin.values[i] for i in step.inputs])
            moved = moved + (lin.values[node] - at_values)
        offsets[node] = moved
        if node is until:
            break
    return offsets[until]


def push_forward(lin: Linearisation, tangents: torch.Tensor, until: fx.Node) -> torch.Tensor:
    """Send a batch of input kernels forward to ``until``: the Kronecker composition.

    Args:
        lin: the model linearised at a point.
        tangents: ``(n, *in_shape)``; the identity basis gives the whole virtual matrix.
        until: the node to stop at.

    Returns:
        ``(n, *until_shape)``.
    """
    users_left: dict[fx.Node, int] = {}
    for step in lin.steps.values():
        for source in set(step.inputs):
            users_left[source] = users_left.get(source, 0) + 1
    carried = {lin.input: tangents}
    for node in lin.traced.nodes:
        if node not in lin.steps:
            continue
        step = lin.steps[node]
        carried[node] = step.linearised.forward([carried[source] for source in step.inputs])
        if node is until:
            return carried[node]
        for source in set(step.inputs):
            users_left[source] -= 1
            if users_left[source] == 0 and source is not lin.input:
                carried.pop(source, None)
    if until is lin.input:
        return tangents
    raise ValueError(f"{until.name} is not an input-dependent operation of the model")
