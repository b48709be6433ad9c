"""The virtual matrix of a CNN: the linear map from input pixels to every output.

For a plain chain of layers (``nn.Sequential``, or a ``features → avgpool → classifier`` model such
as torchvision's AlexNet) kronlib computes ``J`` of shape ``(*out_shape, *in_shape)`` two ways:

* **forward** — the Kronecker way: the effective kernels of every unit are composed layer by
  layer (a convolution of the previous kernels, masks applied, pools selected), with the input
  pixels as a batch axis. For a chain of convolutions each row is chapter 2's composed kernel
  (``kronlib.conv.compose``) placed at its output position. Cost grows with the number of input
  pixels.
* **reverse** — the same composition from the output end: one forward pass records the masks
  and pool picks, then the selected rows go back through the transposed layers in one batch
  (:mod:`kronlib._backward`; the arithmetic of autograd without its bookkeeping). Cost grows
  with the number of rows.

``method="auto"`` picks the cheaper. With ``x=None`` the matrix is data-independent (ReLU as the
identity, MaxPool as AvgPool, as the blog approximates); with ``x`` given it is exact for that
input: ReLU/LeakyReLU masks, MaxPool as the selection it made, BatchNorm (eval) folded, Dropout
off, so that ``model(x) == J·x + offset``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kronlib._backward import maxpool_picks, pull_back, record
from kronlib._validate import ArrayLike, as_float_tensor

__all__ = [
    "EffectiveKernels",
    "UnsupportedLayerError",
    "active_count",
    "affine_output",
    "chain",
    "effective_kernels",
    "prefix",
    "virtual_matrix",
]


class UnsupportedLayerError(ValueError):
    """A model or layer that the virtual-matrix engine cannot represent exactly."""


_SMOOTH = (nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.ELU, nn.Mish, nn.Hardswish)
_LINEAR_OR_PIECEWISE = (
    nn.Conv2d,
    nn.Linear,
    nn.Flatten,
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.BatchNorm2d,
    nn.Identity,
)


def _why_not(layer: nn.Module) -> str | None:
    """Why the engine cannot represent ``layer``, or None if it can."""
    if isinstance(layer, _SMOOTH):
        return (
            "it is a smooth activation: its derivative is not a 0/1 (or slope) mask, so the "
            "network is not piecewise linear and has no exact virtual matrix"
        )
    if isinstance(layer, nn.BatchNorm2d) and layer.training:
        return "it is in training mode (batch statistics couple the inputs): call model.eval()"
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
        return "only ungrouped convolutions with zero padding are supported"
    if isinstance(layer, nn.Conv2d) and isinstance(layer.padding, str):
        return "string paddings ('same'/'valid') are not supported; give the padding as ints"
    if isinstance(layer, nn.Flatten) and (layer.start_dim != 1 or layer.end_dim != -1):
        return "only Flatten(start_dim=1, end_dim=-1) is supported"
    if isinstance(layer, nn.MaxPool2d) and layer.return_indices:
        return "MaxPool2d(return_indices=True) changes the output type"
    if not isinstance(layer, _LINEAR_OR_PIECEWISE):
        return (
            "it is not a layer of a plain chain (residual blocks, attention and custom modules "
            "combine several paths or need their own forward); kronlib composes chains only"
        )
    return None


def chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as an ordered list of ``(name, layer)``, checked layer by layer.

    ``nn.Sequential`` models (nested ones are expanded, with dotted names) and models made of
    ``features``, ``avgpool`` and ``classifier`` (torchvision's AlexNet and VGG, whose forward
    flattens between the last two) are accepted.

    Raises:
        UnsupportedLayerError: naming the first layer that cannot be represented, its position
            and why.
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
            f"model must be an nn.Sequential or a features/avgpool/classifier model such as "
            f"torchvision's AlexNet, got {type(model).__name__}: its forward may do more than "
            "run its layers in order"
        )
    for position, (name, layer) in enumerate(layers):
        reason = _why_not(layer)
        if reason:
            raise UnsupportedLayerError(
                f"layer {position} ({name}: {type(layer).__name__}) is not supported: {reason}"
            )
    return layers


def prefix(model: nn.Module, layer: str) -> nn.Sequential:
    """The model cut after ``layer`` (a name from :func:`chain`), as an ``nn.Sequential``.

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
    for name, child in module.named_children():
        out.extend(
            _expand(child, f"{prefix}{name}.")
            if isinstance(child, nn.Sequential)
            else [(f"{prefix}{name}", child)]
        )
    return out


# -- forward composition -----------------------------------------------------------------------
@dataclass
class _State:
    """What the forward pass carries: for ``n`` input pixels, ``(n, *shape)`` kernels."""

    kernels: torch.Tensor  # J with the input pixels as the batch axis
    offset: torch.Tensor  # (1, *shape): the response to a zero input through the same masks
    value: torch.Tensor | None  # (1, *shape): the activation for x (exact mode only)


def _maxpool_as_avgpool(layer: nn.MaxPool2d) -> nn.AvgPool2d:
    if layer.dilation not in (1, (1, 1)):
        raise UnsupportedLayerError(
            "a dilated MaxPool2d has no AvgPool2d counterpart for the data-independent matrix"
        )
    return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode)


def _step(layer: nn.Module, state: _State, exact: bool, maxpool: str = "select") -> _State:
    J, offset, value = state.kernels, state.offset, state.value
    if isinstance(layer, nn.Conv2d):
        kwargs = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
        J = F.conv2d(J, layer.weight, None, **kwargs)
        offset = F.conv2d(offset, layer.weight, layer.bias, **kwargs)
    elif isinstance(layer, nn.Linear):
        J = J @ layer.weight.T
        offset = F.linear(offset, layer.weight, layer.bias)
    elif isinstance(layer, nn.Flatten):
        J, offset = J.flatten(1), offset.flatten(1)
    elif isinstance(layer, nn.ReLU | nn.LeakyReLU):
        if exact:
            slope = layer.negative_slope if isinstance(layer, nn.LeakyReLU) else 0.0
            gate = torch.where(value > 0, 1.0, slope).to(J.dtype)
            J, offset = J * gate, offset * gate
    elif isinstance(layer, nn.MaxPool2d):
        if exact and maxpool == "select":
            _, index = maxpool_picks(layer, value)

            def select(t: torch.Tensor) -> torch.Tensor:
                flat = t.flatten(2)
                picked = flat.gather(2, index.flatten(2).expand(t.shape[0], -1, -1))
                return picked.reshape(t.shape[0], *index.shape[1:])

            J, offset = select(J), select(offset)
        else:
            average = _maxpool_as_avgpool(layer)
            J, offset = average(J), average(offset)
    elif isinstance(layer, nn.AvgPool2d | nn.AdaptiveAvgPool2d):
        J, offset = layer(J), layer(offset)
    elif isinstance(layer, nn.BatchNorm2d):
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        shift = layer.bias - layer.running_mean * scale
        J = J * scale[:, None, None]
        offset = offset * scale[:, None, None] + shift[:, None, None]
    # Dropout (off) and Identity change nothing
    if exact:
        value = layer(value) if not isinstance(layer, nn.Dropout) else value
    return _State(J, offset, value)


def _forward(
    layers, x: torch.Tensor | None, in_shape, dtype, device, exact: bool, maxpool: str = "select"
) -> _State:
    n = math.prod(in_shape)
    basis = torch.eye(n, dtype=dtype, device=device).reshape(n, *in_shape)
    state = _State(
        basis, torch.zeros(1, *in_shape, dtype=dtype, device=device), x[None] if exact else None
    )
    for position, (name, layer) in enumerate(layers):
        try:
            state = _step(layer, state, exact, maxpool)
        except RuntimeError as error:
            raise ValueError(
                f"an input of shape {tuple(in_shape)} does not fit layer {position} ({name}: "
                f"{type(layer).__name__}): {error}"
            ) from None
    return state


# -- reverse mode --------------------------------------------------------------------------------
def _linearised(layers) -> nn.Sequential:
    """The chain with ReLUs as identities and MaxPools as AvgPools (the data-independent map)."""
    out = []
    for _, layer in layers:
        if isinstance(layer, nn.ReLU | nn.LeakyReLU | nn.Dropout):
            out.append(nn.Identity())
        elif isinstance(layer, nn.MaxPool2d):
            out.append(_maxpool_as_avgpool(layer))
        else:
            out.append(layer)
    return nn.Sequential(*out)


def _as_sequential(layers) -> nn.Sequential:
    return nn.Sequential(*[nn.Identity() if isinstance(m, nn.Dropout) else m for _, m in layers])


def _linearise_at(net: nn.Sequential, point: torch.Tensor):
    """One forward pass: the output at ``point`` and a function giving rows of ``J``.

    Returns ``(output, rows)``; ``rows(index)`` gives ``(len(index), *point.shape)`` for flat
    output indices (all of them for None), pulled back through the transposed layers in one
    batch (:mod:`kronlib._backward`).
    """
    out, pulls = record(list(net), point)

    def rows(index: torch.Tensor | None) -> torch.Tensor:
        n_out = out.numel()
        picks = torch.arange(n_out, device=out.device) if index is None else index
        cotangents = torch.zeros(len(picks), n_out, dtype=out.dtype, device=out.device)
        cotangents[torch.arange(len(picks)), picks] = 1
        return pull_back(pulls, cotangents.reshape(len(picks), *out.shape))

    return out, rows


# -- public API ----------------------------------------------------------------------------------
def _check_input(x: ArrayLike | None, input_shape: Sequence[int] | None):
    if x is None:
        if input_shape is None:
            raise ValueError(
                "give x (for the exact, data-dependent matrix) or input_shape (for "
                "the data-independent one); got neither"
            )
        shape = tuple(int(s) for s in input_shape)
        return None, shape
    point = as_float_tensor(x, "x").detach()
    if not bool(torch.isfinite(point).all()):
        raise ValueError(
            "x contains NaN or inf: the virtual matrix is only defined at a finite input"
        )
    if input_shape is not None and tuple(point.shape) != tuple(input_shape):
        raise ValueError(
            f"x has shape {tuple(point.shape)} but input_shape says {tuple(input_shape)}"
        )
    return point, tuple(point.shape)


def _first_layer_check(layers, shape: tuple[int, ...]) -> None:
    for name, layer in layers:
        if isinstance(layer, nn.Conv2d):
            if len(shape) != 3 or shape[0] != layer.in_channels:
                raise ValueError(
                    f"the input must have shape ({layer.in_channels}, H, W) for the first "
                    f"convolution ({name}), got {shape} (one image, no batch axis)"
                )
            return
        if isinstance(layer, nn.Linear):
            return


def _placement(model: nn.Module, point: torch.Tensor | None) -> tuple[torch.dtype, torch.device]:
    """The dtype to compute in (the input's, else the model's) and the model's device."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    if point is not None:
        return point.dtype, device
    return (parameter.dtype if parameter is not None else torch.float32), device


def _output_index(outputs, n_out: int, device) -> torch.Tensor | None:
    if outputs is None:
        return None
    index = torch.as_tensor(
        [outputs] if isinstance(outputs, int) else list(outputs), dtype=torch.long, device=device
    )
    if index.ndim != 1 or index.numel() == 0:
        raise ValueError(f"outputs must be an int or a non-empty sequence of ints, got {outputs!r}")
    if int(index.min()) < 0 or int(index.max()) >= n_out:
        raise ValueError(
            f"outputs must index the {n_out} outputs (0..{n_out - 1}), got {index.tolist()}"
        )
    return index


def virtual_matrix(
    model: nn.Module,
    x: ArrayLike | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    outputs: int | Sequence[int] | None = None,
    bias: bool = False,
    method: str = "auto",
    maxpool: str = "select",
):
    """The virtual matrix ``J`` of a plain CNN, data-independent or exact at ``x``.

    Args:
        model: a plain chain (see :func:`chain`); BatchNorm layers must be in eval mode.
        x: one input, e.g. ``(C, H, W)`` (no batch axis). ``None`` gives the data-independent
            matrix for inputs of ``input_shape`` (ReLU as identity, MaxPool as AvgPool).
        input_shape: the input shape when ``x`` is None.
        outputs: flat indices of the outputs to keep (e.g. the top-5 classes); ``None`` keeps all.
        bias: also return the offset, so that ``model(x) == J·x + offset``.
        method: ``"forward"`` (composition from the input), ``"reverse"`` (from the output) or
            ``"auto"``
            (forward when there are fewer input pixels than selected outputs).
        maxpool: with ``x``, ``"select"`` (exact: the entry each max-pool picked) or
            ``"average"`` (the blog's approximation, kept for comparison; forward method only).

    Returns:
        ``J`` of shape ``(*out_shape, *in_shape)``, or ``(len(outputs), *in_shape)`` with
        ``outputs``; with ``bias=True`` the pair ``(J, offset)``, offset shaped like ``J``'s
        leading axes. The forward method computes the offset by propagating the biases through
        the same masks; the reverse method as ``model(x) − J·x``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        >>> x = torch.randn(1, 4, 4)
        >>> J, offset = virtual_matrix(net, x, bias=True)
        >>> torch.allclose(net(x[None])[0], (J * x).sum(dim=(1, 2, 3)) + offset, atol=1e-5)
        True
    """
    layers = chain(model)
    point, in_shape = _check_input(x, input_shape)
    _first_layer_check(layers, in_shape)
    if method not in ("auto", "forward", "reverse"):
        raise ValueError(f"method must be 'auto', 'forward' or 'reverse', got {method!r}")
    if maxpool not in ("select", "average"):
        raise ValueError(f"maxpool must be 'select' or 'average', got {maxpool!r}")
    if maxpool == "average" and point is not None:
        if method == "reverse":
            raise ValueError(
                "maxpool='average' with x is an approximation the reverse method cannot compute; "
                "use method='forward' (or 'auto')"
            )
        method = "forward"
    dtype, device = _placement(model, point)
    if point is not None:
        point = point.to(device=device, dtype=dtype)
    exact = point is not None
    net = _as_sequential(layers) if exact else _linearised(layers)
    anchor = point if exact else torch.zeros(in_shape, dtype=dtype, device=device)
    try:
        response, rows = _linearise_at(net, anchor)
    except RuntimeError as error:
        raise ValueError(f"an input of shape {in_shape} does not fit the model: {error}") from None
    out_shape, response = tuple(response.shape), response.flatten()
    n_out, n_in = response.numel(), math.prod(in_shape)
    index = _output_index(outputs, n_out, device)
    n_selected = n_out if index is None else index.numel()
    if method == "auto":
        method = "forward" if n_in <= n_selected else "reverse"

    if method == "forward":
        with torch.no_grad():
            state = _forward(layers, point, in_shape, dtype, device, exact, maxpool)
        J = state.kernels.reshape(n_in, n_out).T
        offset = state.offset.reshape(n_out)
        if index is not None:
            J, offset = J[index], offset[index]
    else:
        J = rows(index).reshape(n_selected, n_in)
        picked = response if index is None else response[index]
        offset = picked - J @ anchor.flatten()
    lead = out_shape if index is None else (n_selected,)
    J = J.reshape(*lead, *in_shape).detach()  # results, not part of anyone's autograd graph
    offset = offset.reshape(lead).detach()
    return (J, offset) if bias else J


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


def effective_kernels(
    model: nn.Module,
    x: ArrayLike | None = None,
    layer: str | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    max_channels: int | None = None,
) -> EffectiveKernels:
    """The effective kernel of every channel of ``layer``, on the input canvas.

    For a convolutional layer each channel is read at the position of its maximum activation
    (the centre without ``x``); for a linear layer each unit is its own channel. The kernel is
    exact for ``x`` (masks and pool selections as they fell) or data-independent without it.

    Args:
        model: a plain chain (see :func:`chain`).
        x: one input (no batch axis), or ``None`` for data-independent kernels.
        layer: the name of a layer in :func:`chain` (e.g. ``"conv1"`` or ``"features.3"``).
        input_shape: the input shape when ``x`` is None.
        max_channels: keep only the first channels (large layers).

    Returns:
        :class:`EffectiveKernels`.
    """
    cut = prefix(model, layer)
    point, in_shape = _check_input(x, input_shape)
    _first_layer_check(chain(cut), in_shape)
    dtype, device = _placement(model, point)
    exact = point is not None
    net = _as_sequential(chain(cut)) if exact else _linearised(chain(cut))
    anchor = point.to(device, dtype) if exact else torch.zeros(in_shape, dtype=dtype, device=device)
    activation, rows = _linearise_at(net, anchor)
    channels = (
        activation.shape[0] if max_channels is None else min(max_channels, activation.shape[0])
    )
    if activation.ndim == 1:
        positions = torch.empty(channels, 0, dtype=torch.long)
        flat = torch.arange(channels, device=device)
    else:
        spatial = activation[:channels].flatten(1)
        if exact:
            where = spatial.argmax(dim=1)
        else:
            centre = [s // 2 for s in activation.shape[1:]]
            where = torch.full(
                (channels,),
                int(
                    torch.tensor(centre)
                    @ torch.tensor(
                        [math.prod(activation.shape[2 + i :]) for i in range(len(centre))]
                    )
                ),
            )
        positions = torch.stack(torch.unravel_index(where.cpu(), activation.shape[1:]), dim=1)
        flat = torch.arange(channels, device=device) * spatial.shape[1] + where.to(device)
    kernels = rows(flat).reshape(channels, *in_shape).detach()
    activations = activation.detach() if exact else None
    return EffectiveKernels(layer, positions, activations, kernels)
