"""The virtual matrix of a CNN: the linear map from input pixels to every output.

Any model that ``torch.fx`` traces into supported operations (:mod:`kronlib.rules`: convolutions,
linear layers, ReLU/LeakyReLU, max/average pools, BatchNorm in eval, dropout, reshapes, sums of
two tensors and concatenations along channels) — plain chains, ResNets, VGGs, SqueezeNets — has,
at each input ``x``, an exact affine map ``model(x) = J·x + offset``. kronlib computes ``J`` of
shape ``(*out_shape, *in_shape)`` two ways (:mod:`kronlib.graph`):

* **forward** — the Kronecker way: the effective kernels of every unit are composed layer by
  layer (a convolution of the previous kernels, masks applied, pools selected), with the input
  pixels as a batch axis. For a chain of convolutions each row is chapter 2's composed kernel
  (``kronlib.conv.compose``) placed at its output position. Cost grows with the input pixels.
* **reverse** — the same composition from the output end: one pass at ``x`` fixes the masks and
  pool picks, then the selected rows go back through the transposed layers in one batch (the
  arithmetic of autograd without its bookkeeping). Cost grows with the number of rows.

``method="auto"`` picks the cheaper. With ``x=None`` the matrix is data-independent (ReLU as the
identity, MaxPool as AvgPool, as the blog approximates); with ``x`` given it is exact for that
input: masks and max-pool selections as they fell, BatchNorm (eval) folded, Dropout off.

The same machinery splits ``J``: :func:`kronecker_terms` by channel at a cut (the blog's "sum of
Kronecker products, one per active channel") and :func:`path_terms` by the number of residual
branches a path takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, overload

import torch
import torch.fx as fx
from torch import nn

from kronlib._cache import traced
from kronlib._plan import PLAN_FAILURES, ChainPlan, compile_chain, identity_rows, layout
from kronlib._validate import ArrayLike, as_float_tensor, as_index, as_int, as_shape
from kronlib.graph import (
    Linearisation,
    TracedModel,
    affine_offset,
    linearise,
    pull_back,
    push_forward,
)
from kronlib.rules import Policy, UnsupportedLayerError, rule_for_module, why_unsupported
from kronlib.rules.combine import Add
from kronlib.rules.shape import Flatten, Passthrough, View

__all__ = [
    "EffectiveKernels",
    "KroneckerTerms",
    "UnsupportedLayerError",
    "active_count",
    "affine_output",
    "chain",
    "effective_kernels",
    "kronecker_terms",
    "path_terms",
    "prefix",
    "virtual_matrix",
]


# -- chains, by name (the book walks LeNet and AlexNet layer by layer) ---------------------------
def chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """A chain model as an ordered list of ``(name, layer)``, checked layer by layer.

    ``nn.Sequential`` models (nested ones are expanded, with dotted names) and models made of
    ``features``, ``avgpool`` and ``classifier`` (torchvision's AlexNet and VGG, whose forward
    flattens between the last two) are chains. Other models go through :func:`virtual_matrix`
    as graphs; this function names the layers of a chain for :func:`prefix`.

    Raises:
        UnsupportedLayerError: for a model that is not a chain, or naming the first layer that
            cannot be represented, its position and why.
    """
    if isinstance(model, nn.Sequential):
        layers = _expand(model, "")
    elif all(hasattr(model, part) for part in ("features", "avgpool", "classifier")):
        layers = [
            *_expand(model.features, "features."),
            ("avgpool", model.avgpool),
            ("flatten", nn.Flatten()),
            *_expand(model.classifier, "classifier."),
        ]
    else:
        raise UnsupportedLayerError(
            f"model must be a plain chain (an nn.Sequential, or a features/avgpool/classifier "
            f"model such as torchvision's AlexNet) to be cut by layer name, got "
            f"{type(model).__name__}; virtual_matrix and kronecker_terms take any traceable model"
        )
    for position, (name, layer) in enumerate(layers):
        rule = rule_for_module(layer)
        reason = (
            why_unsupported("module", layer) if rule is None else rule.from_module(layer).why_not()
        )
        if reason:
            raise UnsupportedLayerError(
                f"layer {position} ({name}: {type(layer).__name__}) is not supported: {reason}"
            )
    return layers


def prefix(model: nn.Module, layer: str) -> nn.Sequential:
    """A chain model cut after ``layer`` (a name from :func:`chain`), as an ``nn.Sequential``.

    Raises:
        ValueError: if ``layer`` names no layer of the chain (the message lists the names).
    """
    layers = chain(model)
    names = [name for name, _ in layers]
    if layer not in names:
        raise ValueError(f"layer must be one of {names}, got {layer!r}")
    return nn.Sequential(*[module for _, module in layers[: names.index(layer) + 1]])


def _expand(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    if not isinstance(module, nn.Sequential):
        return [(prefix.rstrip("."), module)]
    out = []
    # _modules, not named_children(): that one skips a module met before, so a ReLU instance
    # used at two places of a chain would silently vanish from its second place
    for name, child in module._modules.items():
        if child is None:
            continue
        out.extend(
            _expand(child, f"{prefix}{name}.")
            if isinstance(child, nn.Sequential)
            else [(f"{prefix}{name}", child)]
        )
    return out


# -- tracing once per model (kronlib._cache), linearising once per call ------------------------
def _traced(model: nn.Module) -> TracedModel:
    """The model's trace, reused while nothing it depends on has changed (:mod:`kronlib._cache`).

    A trace bakes in the Python-level state of the model (``if self.training``, a float
    attribute, which tensors are attributes), so the cache key holds all of it for every
    module; hooks (which a trace would not run) are checked on every call.
    """
    return traced(model)


@dataclass(frozen=True)
class _Point:
    """Where a model is linearised: the anchor (``x``, or zeros) and how."""

    anchor: torch.Tensor  # in_shape, in the computation's dtype and device
    exact: bool


def _point(model: nn.Module, x: ArrayLike | None, input_shape: Sequence[int] | None) -> _Point:
    """Check ``x`` / ``input_shape`` and choose dtype and device.

    The dtype is the wider of ``x``'s and the model's (a float64 ``x`` on a float32 model is
    computed in float64, the weights converted exactly); the device is the model's.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    parameter = _first_parameter(model)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model_dtype = parameter.dtype if parameter is not None else torch.float32
    if model_dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"model must compute in float32 or float64 (kronlib reproduces its arithmetic), "
            f"its parameters are {model_dtype}: call model.float() or model.double()"
        )
    shape = None if input_shape is None else as_shape(input_shape, "input_shape")
    if x is None:
        if shape is None:
            raise ValueError(
                "give x (for the exact, data-dependent matrix) or input_shape (for "
                "the data-independent one); got neither"
            )
        return _Point(torch.zeros(shape, dtype=model_dtype, device=device), exact=False)
    point = as_float_tensor(x, "x")
    if point.requires_grad:
        point = point.detach()
    if not _all_finite(point):
        raise ValueError(
            "x contains NaN or inf: the virtual matrix is only defined at a finite input"
        )
    if shape is not None and tuple(point.shape) != shape:
        raise ValueError(f"x has shape {tuple(point.shape)} but input_shape says {shape}")
    dtype = point.dtype
    if dtype is not model_dtype:
        dtype = torch.promote_types(dtype, model_dtype)
    # a copy: nothing the engine does can reach the caller's tensor
    if point.dtype is dtype and point.device == device:
        return _Point(point.clone(), exact=True)  # what .to(copy=True) gives, without its parsing
    return _Point(point.to(device=device, dtype=dtype, copy=True), exact=True)


def _first_parameter(model: nn.Module) -> nn.Parameter | None:
    """``next(model.parameters(), None)``: the first parameter in the modules' pre-order.

    The same walk as ``named_modules`` (each module once, where it first appears), without its
    generators.
    """
    stack, seen = [model], set()
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        for value in module._parameters.values():
            if value is not None:
                return value
        stack += [m for m in reversed(module._modules.values()) if m is not None]
    return None


def _all_finite(t: torch.Tensor) -> bool:
    """Whether ``t`` has no NaN or inf.

    A finite sum means every entry is finite (a NaN or inf makes the sum NaN or inf): one
    reduction. Only when the sum is not finite (a NaN, an inf, or an overflow of finite
    entries) is every entry checked.
    """
    return math.isfinite(t.sum()) or bool(torch.isfinite(t).all())


def _linearise(
    model: nn.Module, point: _Point, average_maxpool: bool = False, until: str | None = None
) -> Linearisation:
    """The model linearised at the point (up to the operation named ``until``, if given)."""
    traced = _traced(model)
    stop = None if until is None else traced.node(until, "layer")
    return linearise(traced, point.anchor, Policy(point.exact, average_maxpool), until=stop)


def _one_hot(index: torch.Tensor, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """``(len(index), *shape)`` rows, one 1 each at the flat ``index``."""
    size = math.prod(shape)
    rows = torch.zeros(len(index), size, dtype=like.dtype, device=like.device)
    rows.scatter_(1, index.to(like.device)[:, None], 1.0)
    return rows.reshape(len(index), *shape)


def _selection(outputs, n_out: int) -> torch.Tensor | None:
    """The selected output indices ``(n,)`` of ``n_out``, or ``None`` for every output."""
    return None if outputs is None else as_index(outputs, "outputs", n_out)


def _direction(method: str, n_in: int, n_selected: int) -> str:
    """``"forward"`` or ``"reverse"``: ``"auto"`` takes the one with fewer basis vectors."""
    if method == "auto":
        return "forward" if n_in <= n_selected else "reverse"
    return method


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


# -- the virtual matrix --------------------------------------------------------------------------
@overload
def virtual_matrix(
    model: nn.Module,
    x: ArrayLike | None = ...,
    *,
    input_shape: Sequence[int] | None = ...,
    outputs: int | Sequence[int] | ArrayLike | None = ...,
    bias: Literal[False] = ...,
    method: str = ...,
    maxpool: str = ...,
) -> torch.Tensor: ...


@overload
def virtual_matrix(
    model: nn.Module,
    x: ArrayLike | None = ...,
    *,
    input_shape: Sequence[int] | None = ...,
    outputs: int | Sequence[int] | ArrayLike | None = ...,
    bias: Literal[True],
    method: str = ...,
    maxpool: str = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...


def virtual_matrix(
    model: nn.Module,
    x: ArrayLike | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    outputs: int | Sequence[int] | ArrayLike | None = None,
    bias: bool = False,
    method: str = "auto",
    maxpool: str = "select",
):
    """The virtual matrix ``J`` of a piecewise-linear CNN, data-independent or exact at ``x``.

    Args:
        model: any model ``torch.fx`` traces into supported operations (see
            :mod:`kronlib.rules`); BatchNorm layers must be in eval mode.
        x: one input, e.g. ``(C, H, W)`` (no batch axis), a tensor or numpy array. ``None``
            gives the data-independent matrix for inputs of ``input_shape`` (ReLU as identity,
            MaxPool as AvgPool).
        input_shape: the input shape when ``x`` is None (a sequence of positive ints).
        outputs: flat indices of the outputs to keep (e.g. the top-5 classes): an int, a
            sequence, a numpy array or a tensor of ints (``logits.argmax()`` works); ``None``
            keeps all.
        bias: also return the offset, so that ``model(x) == J·x + offset``.
        method: ``"forward"`` (composition from the input), ``"reverse"`` (from the output) or
            ``"auto"`` (forward when there are fewer input pixels than selected outputs).
        maxpool: with ``x``, ``"select"`` (exact: the entry each max-pool picked) or
            ``"average"`` (the blog's approximation, kept for comparison: masks as ``x`` set
            them, max-pools read as averages; ``J·x + offset`` is then that approximation's
            output, not the model's).

    Returns:
        ``J`` of shape ``(*out_shape, *in_shape)``, or ``(len(outputs), *in_shape)`` with
        ``outputs``; with ``bias=True`` the pair ``(J, offset)``, offset shaped like ``J``'s
        leading axes, so that ``model(x) == J·x + offset`` (with ``maxpool="select"``).

    Raises:
        UnsupportedLayerError: naming the operation that cannot be represented and why.
        ValueError, TypeError: naming the argument that is wrong.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        >>> x = torch.randn(1, 4, 4)
        >>> J, offset = virtual_matrix(net, x, bias=True)
        >>> torch.allclose(net(x[None])[0], (J * x).sum(dim=(1, 2, 3)) + offset, atol=1e-5)
        True
    """
    method = _check_choice(method, "method", ("auto", "forward", "reverse"))
    maxpool = _check_choice(maxpool, "maxpool", ("select", "average"))
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be True or False, got {type(bias).__name__} {bias!r}")
    point = _point(model, x, input_shape)
    traced = _traced(model)
    policy = Policy(point.exact, maxpool == "average" and point.exact)
    lin, fast = _planned_rows(traced, point, policy, outputs, method)
    if fast is not None:
        value, J, index = fast
    else:
        lin = lin if lin is not None else linearise(traced, point.anchor, policy)
        value = lin.values[lin.output]
        index = _selection(outputs, value[0].numel())
        J = _rows(lin, point, value, index, method)
    out_shape, in_shape = tuple(value.shape[1:]), tuple(point.anchor.shape)
    n_out, n_in = math.prod(out_shape), point.anchor.numel()
    n_selected = n_out if index is None else len(index)
    lead = out_shape if index is None else (n_selected,)
    if J.shape != (*lead, *in_shape):
        J = J.reshape(*lead, *in_shape)
    if J.requires_grad:  # results, not part of anyone's autograd graph
        J = J.detach()
    if not bias:
        return J
    if lin is not None and lin.approximate:
        # the offset of the approximate map (biases through its own steps), not value − J·x
        constant = affine_offset(lin, lin.output).flatten()
        offset = constant if index is None else constant[index.to(constant.device)]
    else:
        picked = value.flatten() if index is None else value.flatten()[index.to(value.device)]
        offset = picked - J.reshape(n_selected, n_in) @ point.anchor.flatten()
    offset = offset.reshape(lead).detach()
    return (J, offset) if bias else J


def _seed(index: torch.Tensor | None, out_shape: Sequence[int], like: torch.Tensor):
    """``(n, *out_shape)`` one-hot rows: every output (the identity) or the ``index`` ones."""
    if index is None:
        return identity_rows(tuple(out_shape), like)
    return _one_hot(index, out_shape, like)


def _planned_rows(
    traced: TracedModel,
    point: _Point,
    policy: Policy,
    outputs: int | Sequence[int] | ArrayLike | None,
    method: str,
) -> tuple[Linearisation | None, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None]:
    """``(lin, (value, rows, index))``: rows by the compiled plan of a plain chain.

    ``lin`` is what :func:`_plan` made the plan from on this call (for the caller to reuse), or
    ``None``. ``value`` is ``(1, *out_shape)``, the selected rows ``(n, *in_shape)`` and
    ``index`` the selection. The rows are ``None`` for a model that is not a plain chain, rows
    that go forward, a linearisation no plan is made of (an approximate one), or a model that
    no longer fits its plan (which is then dropped): the general path runs instead.
    """
    if traced.chain is None or method == "forward":
        return None, None
    plan, lin = _plan(traced, point, policy)
    if plan is None:
        return lin, None
    n_out = math.prod(plan.out_shape)
    index = _selection(outputs, n_out)
    n_selected = n_out if index is None else len(index)
    if _direction(method, point.anchor.numel(), n_selected) == "forward":
        return lin, None  # forward is cheaper: the general path
    seed = None if index is None else _one_hot(index, plan.out_shape, point.anchor)
    found = plan.rows(point.anchor, seed)
    if found is None:
        _drop_plan(traced, point, policy)
        return lin, None
    return lin, (*found, index)


def _plan(
    traced: TracedModel, point: _Point, policy: Policy
) -> tuple[ChainPlan | None, Linearisation | None]:
    """``(plan, lin)``: a plain chain's compiled plan for this layout and policy.

    Made the first time from the whole linearisation (which checks every layer and names what
    does not fit), returned as ``lin`` for the caller to use on this call; ``lin`` is ``None``
    when the plan was already there. ``(None, None)`` for a model that is not a plain chain;
    ``(None, lin)`` for a linearisation no plan is made of. Raises what :func:`linearise`
    raises.
    """
    if traced.chain is None:
        return None, None
    key = layout(point.anchor, policy)
    plan = traced.plans.get(key)
    if plan is not None:
        return plan, None
    lin = linearise(traced, point.anchor, policy)
    plan = compile_chain(lin, policy)
    if plan is not None:
        traced.plans[key] = plan
    return plan, lin


def _drop_plan(traced: TracedModel, point: _Point, policy: Policy) -> None:
    """Forget the plan of this layout and policy: the model no longer fits it."""
    traced.plans.pop(layout(point.anchor, policy), None)


def _rows(
    lin: Linearisation,
    point: _Point,
    value: torch.Tensor,
    index: torch.Tensor | None,
    method: str,
) -> torch.Tensor:
    """The selected rows of ``J`` (all with ``index=None``), flat: ``(n, in_numel)``."""
    out_shape, in_shape = tuple(value.shape[1:]), tuple(point.anchor.shape)
    n_out, n_in = value[0].numel(), point.anchor.numel()
    n_selected = n_out if index is None else len(index)
    if _direction(method, n_in, n_selected) == "forward":
        basis = torch.eye(n_in, dtype=value.dtype, device=value.device).reshape(n_in, *in_shape)
        J = push_forward(lin, basis, until=lin.output).reshape(n_in, n_out).T
        if index is not None:
            J = J[index.to(J.device)]
        return J
    J = pull_back(lin, {lin.output: _seed(index, out_shape, value)})
    return J.reshape(n_selected, n_in)


# -- Kronecker terms at a cut --------------------------------------------------------------------
@dataclass(frozen=True)
class KroneckerTerms:
    """The selected rows of ``J`` split by the channel of a cut they pass through.

    Attributes:
        cut: the name of the operation the model was cut at.
        terms: ``(C_cut, n_outputs, *in_shape)``; ``terms[m]`` is the part of the rows that
            passes through channel ``m`` of the cut. ``terms.sum(0)`` is the rows.
        active: ``(C_cut,)`` bool: whether channel ``m`` carries any part of the rows. A
            channel that this input switches off everywhere (a ReLU cut whose channel is
            all zero) carries none: its term is exactly zero and it is not active.
    """

    cut: str
    terms: torch.Tensor
    active: torch.Tensor


def _reach(start: fx.Node, neighbours: dict, avoid: fx.Node | None = None) -> set[fx.Node]:
    """``start`` and every node reachable from it through ``neighbours``, not passing ``avoid``."""
    seen, stack = {start}, [start]
    while stack:
        for nxt in neighbours.get(stack.pop(), ()):
            if nxt is not avoid and nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _consumers(lin: Linearisation) -> dict[fx.Node, list[fx.Node]]:
    """Node → the steps that read it (the data flow as linearised, in-place writes included)."""
    out: dict[fx.Node, list[fx.Node]] = {}
    for node, step in lin.steps.items():
        for source in step.inputs:
            out.setdefault(source, []).append(node)
    return out


def _dominates(lin: Linearisation, cut: fx.Node) -> bool:
    """Whether every path from the input to the output passes through ``cut``."""
    return lin.output not in _reach(lin.input, _consumers(lin), avoid=cut)


def kronecker_terms(
    model: nn.Module,
    x: ArrayLike | None = None,
    *,
    cut: str,
    outputs: int | Sequence[int] | ArrayLike | None = None,
    input_shape: Sequence[int] | None = None,
) -> KroneckerTerms:
    """Split rows of the virtual matrix by the channel of ``cut`` they pass through.

    With ``G = ∂y/∂h`` (rows, from the output back to the cut ``h``) and ``H = ∂h/∂x``, the rows
    are ``Σ_m G[:, m] H[m]``: one term per channel ``m`` of the cut. For a stride = kernel
    composition each term is a Kronecker product (chapter 4); in general it is the part of the
    rows that flows through channel ``m``.

    Args:
        model: as for :func:`virtual_matrix`.
        x: one input, or ``None`` for the data-independent matrix.
        cut: the name of an operation every path from input to output passes through (a layer
            of a chain, e.g. ``"conv2"`` or ``"relu2"``; not a layer inside a residual block).
        outputs: rows to split, as for :func:`virtual_matrix` (default: all outputs).
        input_shape: the input shape when ``x`` is None.

    Returns:
        :class:`KroneckerTerms`.
    """
    point = _point(model, x, input_shape)
    lin = _linearise(model, point)
    node = lin.traced.node(cut, "cut")
    if node not in lin.steps:
        raise ValueError(f"cut must name an operation that depends on the input, got {cut!r}")
    if not _dominates(lin, node):
        raise ValueError(
            f"cut {cut!r} does not separate the input from the output: some path (a skip "
            "connection) goes around it, so its channels cannot carry every term"
        )
    cut_value = lin.values[node]
    if cut_value.ndim < 2:
        raise ValueError(
            f"cut {cut!r} has no channel axis (its value has shape {tuple(cut_value.shape)})"
        )
    value = lin.values[lin.output]
    index = _selection(outputs, value[0].numel())
    picks = torch.arange(value[0].numel()) if index is None else index
    n, channels = len(picks), cut_value.shape[1]
    eye = torch.eye(channels, dtype=value.dtype, device=value.device)

    def split(at: fx.Node, cot: torch.Tensor) -> torch.Tensor:
        if at is not node:
            return cot
        mask = eye.reshape(channels, 1, channels, *(1,) * (cot.ndim - 2))
        return (cot[None] * mask).reshape(channels * n, *cot.shape[1:])

    rows = pull_back(lin, {lin.output: _one_hot(picks, value.shape[1:], value)}, at=split)
    terms = rows.reshape(channels, n, *point.anchor.shape).detach()
    active = terms.reshape(channels, -1).ne(0).any(dim=1).cpu()
    return KroneckerTerms(cut, terms, active)


# -- path terms of residual networks -------------------------------------------------------------
def _layers_between(lin: Linearisation, start: fx.Node, end: fx.Node) -> int:
    """The most layers (steps other than reshapes and identities) on a path ``start → end``."""
    longest: dict[fx.Node, int] = {start: 0}
    for node in lin.traced.nodes:
        if node is start or node not in lin.steps:
            continue
        step = lin.steps[node]
        reached = [longest[i] for i in step.inputs if i in longest]
        if reached:
            moves_nothing = isinstance(step.rule, Flatten | View | Passthrough)
            longest[node] = max(reached) + (0 if moves_nothing else 1)
        if node is end:
            break
    return longest[end]


def _residual_branches(lin: Linearisation) -> dict[fx.Node, int]:
    """Each sum of two input-dependent tensors → the index of its branch (not its shortcut).

    At each such sum the shortcut is the addend with fewer layers since the fork (the nearest
    operation both addends come from): an identity or a 1×1 projection.
    """
    branches = {}
    order = {node: i for i, node in enumerate(lin.traced.nodes)}
    for node, step in lin.steps.items():
        if not isinstance(step.rule, Add) or len(step.inputs) != 2:
            continue
        a, b = step.inputs
        common = _upstream(lin, a) & _upstream(lin, b)
        fork = max(common, key=order.__getitem__)
        depth = [_layers_between(lin, fork, addend) for addend in (a, b)]
        if depth[0] == depth[1]:
            raise UnsupportedLayerError(
                f"{lin.traced.label(node)} adds two paths with {depth[0]} layers each since "
                f"they forked at {fork.name}: no shortcut to tell from the branch"
            )
        branches[node] = 0 if depth[0] > depth[1] else 1
    return branches


def _upstream(lin: Linearisation, node: fx.Node) -> set[fx.Node]:
    """``node`` and every input-dependent node it is computed from."""
    return _reach(node, {n: step.inputs for n, step in lin.steps.items()})


def path_terms(
    model: nn.Module,
    x: ArrayLike | None = None,
    *,
    outputs: int | Sequence[int] | ArrayLike | None = None,
    input_shape: Sequence[int] | None = None,
) -> dict[int, torch.Tensor]:
    """Split the virtual matrix by how many residual branches a path takes.

    A residual network's ``J`` is a sum over paths: at each residual sum a path takes either the
    shortcut (the addend with fewer layers since the fork) or the branch. ``J_k`` sums the paths
    that take exactly ``k`` branches. The rows go back once, carrying a count of branches as
    an extra batch axis (a polynomial in the number of branches taken), so the cost is that of
    ``n + 1`` sets of rows for ``n`` residual sums, not ``2^n`` paths.

    Args:
        model: as for :func:`virtual_matrix`.
        x: one input, or ``None`` for the data-independent matrix.
        outputs: rows to split, as for :func:`virtual_matrix` (default: all outputs).
        input_shape: the input shape when ``x`` is None.

    Returns:
        ``{k: J_k}`` for ``k = 0..n``, each shaped like :func:`virtual_matrix`'s ``J`` (the
        ``J_k`` sum to ``J``); a chain gives ``{0: J}``.

    Raises:
        UnsupportedLayerError: at a sum whose two addends are equally deep (no shortcut).
    """
    point = _point(model, x, input_shape)
    lin = _linearise(model, point)
    branches = _residual_branches(lin)
    value = lin.values[lin.output]
    index = _selection(outputs, value[0].numel())
    picks = torch.arange(value[0].numel()) if index is None else index
    n, degrees = len(picks), len(branches) + 1
    seed = value.new_zeros(degrees, n, *value.shape[1:])
    seed[0] = _one_hot(picks, value.shape[1:], value)

    def count_branch(node: fx.Node, i: int, cot: torch.Tensor) -> torch.Tensor:
        if branches.get(node) != i:
            return cot
        by_degree = cot.reshape(degrees, n, *cot.shape[1:])
        return torch.cat([torch.zeros_like(by_degree[:1]), by_degree[:-1]]).reshape(cot.shape)

    rows = pull_back(
        lin, {lin.output: seed.reshape(degrees * n, *value.shape[1:])}, edge=count_branch
    )
    lead = tuple(value.shape[1:]) if index is None else (n,)
    rows = rows.reshape(degrees, *lead, *point.anchor.shape).detach()
    return {k: rows[k] for k in range(degrees)}


# -- effective kernels ---------------------------------------------------------------------------
def affine_output(J: ArrayLike, x: ArrayLike, offset: ArrayLike | None = None) -> torch.Tensor:
    """``J·x + offset``: the affine map of :func:`virtual_matrix` applied to one input.

    For the ``x`` that ``J`` and ``offset`` were built at (``bias=True``), this is the model's
    output; for the data-independent ``J``, the template scores.

    Args:
        J: ``(*out_shape, *in_shape)``.
        x: ``in_shape`` (no batch axis).
        offset: ``out_shape``, or None for zero.

    Returns:
        ``out_shape``.

    Example:
        >>> J, x = torch.ones(3, 1, 2, 2), torch.full((1, 2, 2), 0.5)
        >>> affine_output(J, x, offset=torch.tensor([0.0, 1.0, 2.0])).tolist()
        [2.0, 3.0, 4.0]
    """
    matrix, point = as_float_tensor(J, "J"), as_float_tensor(x, "x")
    lead = matrix.ndim - point.ndim
    if lead < 0 or tuple(matrix.shape[lead:]) != tuple(point.shape):
        raise ValueError(
            f"J must end with x's shape {tuple(point.shape)}, got J of shape {tuple(matrix.shape)}"
        )
    dtype = torch.promote_types(matrix.dtype, point.dtype)
    out = (matrix.to(dtype) * point.to(dtype)).flatten(lead).sum(-1)
    return out if offset is None else out + as_float_tensor(offset, "offset").to(out)


@dataclass(frozen=True)
class EffectiveKernels:
    """Per channel of one layer: where it was read, its activation map, its effective kernel.

    Attributes:
        layer: the layer's name in :func:`chain`.
        positions: ``(n_channels, k)`` index of the chosen unit inside each channel (empty
            ``k = 0`` for a linear layer, whose channels are single units).
        activations: the layer's output for ``x`` (``None`` without ``x``), no batch axis.
        kernels: ``(n_channels, *in_shape)``: the effective kernel of each chosen unit.
    """

    layer: str
    positions: torch.Tensor
    activations: torch.Tensor | None
    kernels: torch.Tensor

    def active_channels(self) -> int:
        """How many channels (of all in the layer) have a positive activation somewhere."""
        if self.activations is None:
            raise ValueError("activations are only known for a given x")
        return active_count(self.activations)


def active_count(activation: torch.Tensor) -> int:
    """How many channels of one layer output are positive somewhere.

    Args:
        activation: ``(C, ...)`` one input's layer output (no batch axis); a linear layer's
            ``(C,)`` counts its positive units.
    """
    peak = activation if activation.ndim == 1 else activation.flatten(1).amax(dim=1)
    return int((peak > 0).sum())


@overload
def effective_kernels(
    model: nn.Module,
    x: ArrayLike | None = ...,
    layer: str | None = ...,
    *,
    input_shape: Sequence[int] | None = ...,
    max_channels: int | None = ...,
    channels: Sequence[int] | ArrayLike | None = ...,
) -> EffectiveKernels: ...


@overload
def effective_kernels(
    model: nn.Module,
    x: ArrayLike | None = ...,
    layer: list[str] | tuple[str, ...] = ...,
    *,
    input_shape: Sequence[int] | None = ...,
    max_channels: int | None = ...,
    channels: None = ...,
) -> dict[str, EffectiveKernels]: ...


def effective_kernels(
    model: nn.Module,
    x: ArrayLike | None = None,
    layer: str | list[str] | tuple[str, ...] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    max_channels: int | None = None,
    channels: Sequence[int] | ArrayLike | None = None,
):
    """The effective kernel of every channel of ``layer``, on the input canvas.

    For a convolutional layer each channel is read at the position of its maximum activation
    (the centre without ``x``); for a linear layer each unit is its own channel. The kernel is
    exact for ``x`` (masks and pool selections as they fell) or data-independent without it.

    Several layers at once (a list of names) share one forward pass. When a linear layer is
    among them with all its units, its kernels are the rows of its whole Jacobian; the rows of
    any deeper layer then go back only as far as that layer and are multiplied by them (the
    chain rule: the same numbers up to the order of float sums).

    Args:
        model: as for :func:`virtual_matrix`.
        x: one input (no batch axis), or ``None`` for data-independent kernels.
        layer: the name of an operation of the model (e.g. ``"conv1"``, ``"features.3"`` or
            ``"layer1.0.conv2"``; a wrong name raises a ValueError listing the names), or a
            list of distinct names.
        input_shape: the input shape when ``x`` is None.
        max_channels: keep only the first channels (large layers): a positive int; with
            several layers, of each.
        channels: instead of ``max_channels``, the channels to keep, in the order wanted (e.g.
            the most active first); ``positions`` and ``kernels`` follow that order. One layer
            only.

    Returns:
        :class:`EffectiveKernels`; for a list of layers, ``{name: EffectiveKernels}`` in the
        order given.
    """
    if max_channels is not None:
        max_channels = as_int(max_channels, "max_channels", minimum=1)
    point = _point(model, x, input_shape)
    traced = _traced(model)
    if layer is None:
        raise ValueError(f"layer must name an operation of the model, one of {list(traced.names)}")
    several = isinstance(layer, list | tuple)
    names = _layer_names(layer) if several else [layer]
    if several and channels is not None:
        raise ValueError(
            "channels names the channels of one layer: give one layer with channels, or "
            "max_channels for several"
        )
    reaches, planned = _layer_reaches(traced, point, names)
    try:
        found = _kernels_of(names, point, reaches, channels, max_channels)
    except PLAN_FAILURES:
        if not planned:
            raise
        # the plan no longer fits the model (found only on the way back): the general path
        _drop_plan(traced, point, Policy(point.exact))
        reaches, _ = _layer_reaches(traced, point, names)
        found = _kernels_of(names, point, reaches, channels, max_channels)
    return found if several else found[names[0]]


def _layer_names(layer: list | tuple) -> list[str]:
    """A list of distinct layer names, checked."""
    if not layer:
        raise ValueError("layer must name at least one layer, got an empty list")
    names = list(layer)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be str, got {type(name).__name__} {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"layer must name distinct layers, got {names}")
    return names


@dataclass(frozen=True)
class _Reach:
    """One layer's output at the point and the ways its rows go back.

    Attributes:
        activation: ``(C, ...)`` the layer's output (no batch axis).
        depth: how far along the model the layer is (layers are sent back in this order).
        to_input: rows ``(n, *shape)`` on the output → ``(n, *in_shape)``.
        to_layer: rows → rows on the output of the layer at an earlier depth (plans only).
        chunk: how many rows to send back at once.
    """

    activation: torch.Tensor
    depth: int
    to_input: Callable[[torch.Tensor], torch.Tensor]
    to_layer: Callable[[torch.Tensor, int], torch.Tensor] | None
    chunk: int


def _kernels_of(
    names: list[str],
    point: _Point,
    reaches: list[_Reach],
    channels: Sequence[int] | ArrayLike | None,
    max_channels: int | None,
) -> dict[str, EffectiveKernels]:
    """The kernels of every named layer, the shallowest first, reusing complete Jacobians.

    A linear layer whose every unit was sent back has its whole Jacobian ``(C, in_numel)`` as
    kernels: a deeper layer's rows then go back only to its output and through that matrix.
    """
    found: dict[str, EffectiveKernels] = {}
    complete: tuple[int, torch.Tensor] | None = None  # (depth, Jacobian) of the deepest so far
    for name, reach in sorted(zip(names, reaches, strict=True), key=lambda pair: pair[1].depth):
        pull = reach.to_input
        if complete is not None and reach.to_layer is not None and complete[0] < reach.depth:
            pull = partial(_through, reach.to_layer, *complete)
        result = _kernels(name, point, reach.activation, pull, reach.chunk, channels, max_channels)
        found[name] = result
        every_unit = channels is None and len(result.kernels) == reach.activation.shape[0]
        if reach.activation.ndim == 1 and every_unit:  # in order: its Jacobian's rows
            complete = (reach.depth, result.kernels.flatten(1))
    return {name: found[name] for name in names}


def _through(
    to_layer: Callable[[torch.Tensor, int], torch.Tensor],
    depth: int,
    jacobian: torch.Tensor,
    part: torch.Tensor,
) -> torch.Tensor:
    """Rows back to the layer at ``depth``, then through its Jacobian: ``(n, in_numel)``."""
    return to_layer(part, depth).flatten(1) @ jacobian


def _kernels(
    layer: str,
    point: _Point,
    activation: torch.Tensor,
    pull: Callable[[torch.Tensor], torch.Tensor],
    chunk: int,
    channels: Sequence[int] | ArrayLike | None,
    max_channels: int | None,
) -> EffectiveKernels:
    """:func:`effective_kernels` from the layer's output and its rows' way back."""
    if activation.ndim == 0:
        raise ValueError(f"layer {layer!r} has no channel axis")
    if channels is not None and max_channels is not None:
        raise ValueError("give channels or max_channels, not both")
    if channels is not None:
        chosen = as_index(channels, "channels", activation.shape[0])
    else:
        count = activation.shape[0] if max_channels is None else max_channels
        chosen = torch.arange(min(count, activation.shape[0]))
    n_chosen, device = len(chosen), activation.device
    if activation.ndim == 1:
        positions = torch.empty(n_chosen, 0, dtype=torch.long)
        flat = chosen.to(device)
    else:
        spatial = activation[chosen.to(device)].flatten(1)
        if point.exact:
            where = spatial.argmax(dim=1)
        else:
            centre = [s // 2 for s in activation.shape[1:]]
            where = torch.full((n_chosen,), _flat_index(centre, activation.shape[1:]))
        positions = _unravel(where.cpu(), activation.shape[1:])
        flat = chosen.to(device) * spatial.shape[1] + where.to(device)
    seed = _one_hot(flat.cpu(), activation.shape, activation[None])
    rows = [pull(part) for part in seed.split(chunk)]
    kernels = torch.cat(rows).reshape(n_chosen, *point.anchor.shape).detach()
    activations = activation.detach().clone() if point.exact else None
    return EffectiveKernels(layer, positions, activations, kernels)


# rows sent back together: enough to keep each operation busy, few enough that the rows'
# intermediate tensors stay small (the allocator then reuses their memory from one group to the
# next instead of returning it to the system and faulting fresh pages in)
_CHUNK_BYTES = 1 << 18
_MIN_CHUNK = 16


def _row_chunk(row_bytes: Sequence[int]) -> int:
    """How many rows :func:`effective_kernels` pulls back at once (each row is independent).

    ``row_bytes``: the bytes of one row at each layer's output.
    """
    return max(_MIN_CHUNK, _CHUNK_BYTES // max(1, *row_bytes))


def _layer_reaches(
    traced: TracedModel, point: _Point, layers: list[str]
) -> tuple[list[_Reach], bool]:
    """``(reaches, planned)``: each named layer's output at the point and its rows' way back.

    A plain chain takes its compiled plan for this layout (made here the first time, from the
    whole linearisation), running the layers up to the deepest named one once; ``planned``
    then says the ways back are the plan's (which raise a RuntimeError when the model no longer
    fits it, for the caller to drop the plan and come back). Anything else (a model whose later
    layers do not fit this input, one that no longer fits its plan) takes the general
    linearisation up to the deepest named layer.
    """
    nodes = [traced.node(layer, "layer") for layer in layers]
    order = {node: i for i, node in enumerate(traced.nodes)}
    deepest = max(nodes, key=order.__getitem__)
    policy = Policy(point.exact)
    try:
        plan, lin = _plan(traced, point, policy)
    except ValueError:  # a later layer does not fit this input: not needed here
        plan, lin = None, None
    if lin is not None:  # the plan was made now: this call has the whole linearisation
        return _general_reach(lin, nodes, layers, order), False
    if plan is not None and all(node in plan.nodes for node in nodes):
        stops = [plan.nodes.index(node) + 1 for node in nodes]
        try:
            with torch.no_grad():
                _, saved, values = plan.run(point.anchor, max(stops), keep=stops)
        except PLAN_FAILURES:
            _drop_plan(traced, point, policy)
        else:
            return [_planned_reach(plan, saved, values[stop], stop) for stop in stops], True
    lin = linearise(traced, point.anchor, policy, until=deepest)
    return _general_reach(lin, nodes, layers, order), False


def _planned_reach(plan: ChainPlan, saved: list, value: torch.Tensor, stop: int) -> _Reach:
    """The :class:`_Reach` of the plan's first ``stop`` layers' output."""

    def to_input(part: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return plan.send_back(saved[:stop], part)

    def to_layer(part: torch.Tensor, depth: int) -> torch.Tensor:
        with torch.no_grad():
            return plan.send_back(saved[:stop], part, stop=depth)

    return _Reach(value[0], stop, to_input, to_layer, _row_chunk(plan.row_bytes[:stop]))


def _general_reach(
    lin: Linearisation, nodes: list[fx.Node], layers: list[str], order: dict[fx.Node, int]
) -> list[_Reach]:
    """The :class:`_Reach` of each node by a linearisation that reaches them all."""
    row_bytes = [v[0].numel() * v.element_size() for n, v in lin.values.items() if n in lin.steps]
    chunk = _row_chunk(row_bytes)
    reaches = []
    for node, layer in zip(nodes, layers, strict=True):
        if node not in lin.steps:
            raise ValueError(
                f"layer must name an operation that depends on the input, got {layer!r}"
            )
        to_input = partial(_pull_from, lin, node)
        reaches.append(_Reach(lin.values[node][0], order[node], to_input, None, chunk))
    return reaches


def _pull_from(lin: Linearisation, node: fx.Node, part: torch.Tensor) -> torch.Tensor:
    """Rows on ``node``'s output sent back to the input (:func:`pull_back`)."""
    return pull_back(lin, {node: part})


def _unravel(flat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(n, len(shape))`` row-major positions of the flat indices ``flat`` ``(n,)``.

    ``torch.stack(torch.unravel_index(flat, shape), dim=1)`` in a few integer operations.
    """
    axes = []
    for size in reversed(shape):
        axes.append(flat % size)
        flat = flat.div(size, rounding_mode="floor")
    return torch.stack(axes[::-1], dim=1)


def _flat_index(position: Sequence[int], shape: Sequence[int]) -> int:
    """Row-major flat index of ``position`` in an array of ``shape``."""
    flat = 0
    for p, s in zip(position, shape, strict=True):
        flat = flat * s + int(p)
    return flat
