"""Time the virtual matrix: kronlib (forward and reverse) against autograd, LeNet and AlexNet.

Rows, each the median of several runs on this machine (threads fixed to 2):

* LeNet-5, all 10 classes, data-dependent: kronlib forward, kronlib reverse, kronlib default,
  ``torch.func.jacrev``, ``torch.autograd.functional.jacobian``, a loop of ``torch.autograd.grad``
  per class.
* AlexNet, top 5 classes of a 224×224 photo: kronlib default against the same peers (peak memory
  of the process is reported too).
* Effective kernels of every channel of every LeNet layer: ``kronlib.virtual.effective_kernels``
  against a loop of ``torch.autograd.grad`` per channel.

Targets (issue 5): the default no slower than the best peer; effective kernels at least 10× faster
than the per-channel loop; AlexNet top-5 within 30 s and 4 GB on 2 cores.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

import torch
from torch import nn

from kronlib.data import imagenet_input
from kronlib.models import LeNet5, alexnet
from kronlib.timing import median_seconds
from kronlib.virtual import effective_kernels, prefix, virtual_matrix


def peers(model: nn.Module, x: torch.Tensor, classes: list[int]) -> dict[str, Callable]:
    """Autograd ways to the same rows of the Jacobian."""

    def rows(inp: torch.Tensor) -> torch.Tensor:
        return model(inp[None])[0][classes]

    def grad_loop() -> torch.Tensor:
        out = []
        for c in classes:
            inp = x.clone().requires_grad_(True)
            out.append(torch.autograd.grad(model(inp[None])[0, c], inp)[0])
        return torch.stack(out)

    return {
        "torch.func.jacrev": lambda: torch.func.jacrev(rows)(x),
        "autograd.functional.jacobian": lambda: torch.autograd.functional.jacobian(rows, x),
        "autograd.grad per class": grad_loop,
    }


def table(title: str, timings: dict[str, float], reference: str) -> None:
    """Print timings with their ratio to ``reference``."""
    print(f"\n{title}")
    print(f"{'method':>32} {'median':>10} {'vs ' + reference:>24}")
    for name, seconds in timings.items():
        ratio = seconds / timings[reference]
        print(f"{name:>32} {seconds * 1e3:>8.1f}ms {ratio:>23.2f}×")


def lenet_rows() -> None:
    """LeNet-5, all ten classes."""
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.rand(1, 32, 32)
    classes = list(range(10))
    reference = torch.func.jacrev(lambda inp: model(inp[None])[0])(x)
    timings = {}
    for method in ("forward", "reverse", "auto"):
        J = virtual_matrix(model, x, method=method)
        torch.testing.assert_close(J, reference, rtol=1e-5, atol=1e-5)
        timings[f"kronlib {method}"] = median_seconds(
            lambda m=method: virtual_matrix(model, x, method=m), repeats=20
        )
    for name, fn in peers(model, x, classes).items():
        timings[name] = median_seconds(fn, repeats=20)
    table("LeNet-5, 10 classes, exact at x", timings, "kronlib auto")


def lenet_effective_kernels() -> None:
    """Every channel of every LeNet layer."""
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

    table(
        "LeNet-5, effective kernels of all 258 channels of 7 layers",
        {
            "kronlib effective_kernels": median_seconds(ours, 5),
            "autograd.grad per channel": median_seconds(loop, 5),
        },
        "kronlib effective_kernels",
    )


def alexnet_rows() -> None:
    """AlexNet, the top five classes of a photo."""
    model, source, _ = alexnet(verbose=False)
    x = imagenet_input("flower")
    classes = model(x[None])[0].topk(5).indices.tolist()
    timings = {
        "kronlib auto": median_seconds(lambda: virtual_matrix(model, x, outputs=classes), repeats=3)
    }
    for name, fn in peers(model, x, classes).items():
        timings[name] = median_seconds(fn, repeats=3)
    table(f"AlexNet, top 5 classes, exact at x ({source.split(':')[0]})", timings, "kronlib auto")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{'peak resident memory of this process':>32} {peak_gb:>8.2f} GB")


if __name__ == "__main__":
    torch.set_num_threads(2)
    lenet_rows()
    lenet_effective_kernels()
    alexnet_rows()
