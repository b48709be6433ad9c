"""Time the virtual matrix: kronlib against torch.func.jacrev on the same rows.

Rows, each the median of runs alternating kronlib and its peer on this machine (threads fixed
to 2, so both see the same drift of the machine), with the ratio kronlib / peer and the target
of issue 11 next to it. The ratio is that of the steady state: rounds alternate blocks of
consecutive calls of each function (``kronlib.timing.paired_median_seconds(block=…)``), the
time per call as ``timeit`` measures it. The last column is the ratio with blocks of one call,
each call right after the other function's (for the millisecond LeNet calls the caches the peer
left cost kronlib a larger share of its time); for the ImageNet models, whose calls take tenths
of a second, one call is the block and the two ratios are one:

* LeNet-5, all 10 classes, exact at a digit-sized input: kronlib (auto = reverse) ≤ 0.5×.
* AlexNet, VGG11 and ResNet-18 at 3×224×224, the top-5 classes, exact: kronlib ≤ 1.0× each,
  with the peak resident memory of the process after each model.
* Effective kernels of every channel of every LeNet layer: kronlib ≥ 10× faster than a loop of
  ``torch.autograd.grad`` per channel, called layer by layer and with all layers in one call
  (one forward pass; the linear layers after fc1 go back only to the layer before them).

Weights are seeded random ones (timings do not depend on training); run with
``python benchmarks/virtual_matrix.py`` in the book's environment.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from kronlib import effective_kernels, virtual_matrix
from kronlib.models import LeNet5
from kronlib.timing import paired_median_seconds
from kronlib.virtual import prefix


def jacrev_rows(model: nn.Module, x: torch.Tensor, classes: list[int]) -> Callable[[], object]:
    """``torch.func.jacrev`` of the selected outputs: the referee on the same rows."""
    index = torch.tensor(classes)

    def rows(inp: torch.Tensor) -> torch.Tensor:
        return model(inp[None])[0][index]

    return lambda: torch.func.jacrev(rows)(x)


def row(name: str, steady: tuple[float, float], target: str, one: tuple[float, float] | None):
    """One line of the table: the steady-state times and ratio, the one-call ratio."""
    ours, theirs = steady
    after = f"{'—':>10}" if one is None else f"{one[0] / one[1]:>9.3f}×"
    times = f"{ours * 1e3:>9.1f} {theirs * 1e3:>9.1f}"
    print(f"{name:<44} {times} {ours / theirs:>7.3f}×  {target:<7}{after}")


def header(title: str) -> None:
    """A table title and its column names."""
    print(f"\n{title}")
    print(f"{'':<44} {'kronlib':>9} {'peer':>9} {'ratio':>8}  {'target':<7}{'one call':>10}")
    print(f"{'':<44} {'(ms)':>9} {'(ms)':>9} {'':>8}  {'':<7}{'after peer':>10}")


def both(ours: Callable[[], object], peer: Callable[[], object], rounds: int, block: int):
    """``(steady, one)``: the paired medians with blocks of ``block`` calls, and of one call."""
    steady = paired_median_seconds(ours, peer, repeats=rounds, block=block)
    return steady, paired_median_seconds(ours, peer, repeats=rounds * block)


def lenet_rows() -> None:
    """LeNet-5, all ten classes, exact at x."""
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(1, 32, 32)
    classes = list(range(10))
    reference = jacrev_rows(model, x, classes)()
    torch.testing.assert_close(virtual_matrix(model, x), reference, rtol=1e-5, atol=1e-6)
    steady, one = both(lambda: virtual_matrix(model, x), jacrev_rows(model, x, classes), 20, 20)
    header("LeNet-5, all 10 rows, exact at x")
    row("virtual_matrix(model, x)", steady, "≤ 0.5×", one)


def imagenet_rows() -> None:
    """AlexNet, VGG11 and ResNet-18 at 224×224: the top five classes."""
    header("3×224×224, top-5 rows, exact at x (seeded random weights)")
    for name in ("alexnet", "vgg11", "resnet18"):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
        x = torch.rand(3, 224, 224)
        with torch.no_grad():
            classes = model(x[None])[0].topk(5).indices.tolist()
        reference = jacrev_rows(model, x, classes)()
        J = virtual_matrix(model, x, outputs=classes)
        torch.testing.assert_close(J, reference, rtol=1e-4, atol=1e-6)
        steady = paired_median_seconds(
            lambda m=model, v=x, c=classes: virtual_matrix(m, v, outputs=c),
            jacrev_rows(model, x, classes),
            repeats=7,
        )
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        row(f"{name} (peak memory so far {peak_gb:.2f} GB)", steady, "≤ 1.0×", None)


def lenet_effective_kernels() -> None:
    """Every channel of every LeNet layer, against a per-channel autograd loop."""
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(1, 32, 32)
    layers = ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3"]

    def ours() -> None:
        for layer in layers:
            effective_kernels(model, x, layer)

    def loop() -> None:
        for layer in layers:
            cut = prefix(model, layer)
            with torch.no_grad():
                out = cut(x[None])[0]
            flat = out.flatten(1) if out.ndim > 1 else out[:, None]
            where = flat.argmax(dim=1)
            for c in range(out.shape[0]):
                inp = x.clone().requires_grad_(True)
                value = cut(inp[None])[0]
                value = value.flatten(1)[c, where[c]] if value.ndim > 1 else value[c]
                torch.autograd.grad(value, inp)

    def at_once() -> None:
        effective_kernels(model, x, layers)

    header("LeNet-5, effective kernels of all 258 channels of 7 layers (vs an autograd loop)")
    steady, one = both(ours, loop, 5, 3)
    row("effective_kernels, layer by layer", steady, "≤ 0.1×", one)
    steady, one = both(at_once, loop, 5, 3)
    row("effective_kernels, all layers in one call", steady, "≤ 0.1×", one)


if __name__ == "__main__":
    torch.set_num_threads(2)
    lenet_rows()
    lenet_effective_kernels()
    imagenet_rows()
