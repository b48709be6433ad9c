"""BatchNorm in eval mode (``nn.BatchNorm1d/2d``, ``F.batch_norm``): a per-channel affine map.

``y = (x − mean) / sqrt(var + eps) · γ + β`` with the running statistics: the kernels are scaled
per channel, the shift goes into the offset. Training mode (batch statistics couple the images of
a batch) and ``track_running_stats=False`` (which uses batch statistics even in eval) are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules.base import Linearised, Policy, Rule, parameter, pointwise


@dataclass(frozen=True, eq=False)
class BatchNorm(Rule):
    """Eval-mode batch normalisation: ``scale = γ / sqrt(var + eps)`` per channel.

    ``γ = 1`` and ``β = 0`` when ``affine=False``.
    """

    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    training: bool
    eps: float

    modules = (nn.BatchNorm1d, nn.BatchNorm2d)
    functions = (F.batch_norm,)

    @classmethod
    def from_module(cls, module: nn.modules.batchnorm._BatchNorm) -> BatchNorm:
        """One BatchNorm module: eval mode with running statistics, else refused."""
        uses_batch_stats = module.training or module.running_mean is None
        return cls(
            module.running_mean,
            module.running_var,
            module.weight,
            module.bias,
            uses_batch_stats,
            float(module.eps),
        )

    @classmethod
    def from_call(
        cls,
        input,
        running_mean,
        running_var,
        weight=None,
        bias=None,
        training=False,
        momentum=0.1,
        eps=1e-5,
    ):
        """``F.batch_norm(input, running_mean, running_var, weight, bias, training, …)``."""
        uses_batch_stats = bool(training) or running_mean is None
        return [input], cls(running_mean, running_var, weight, bias, uses_batch_stats, float(eps))

    def why_not(self) -> str | None:
        """Batch statistics couple the images of a batch: no per-image linear map."""
        if self.training:
            return (
                "it normalises with batch statistics (training mode, or "
                "track_running_stats=False), which couple the images of a batch: call "
                "model.eval() and keep running statistics"
            )
        return None

    def linearise(self, inputs: Sequence[torch.Tensor], policy: Policy) -> Linearised:
        """A per-channel scale, the same under either policy."""
        (x,) = inputs
        mean, var = parameter(self.running_mean, x), parameter(self.running_var, x)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * parameter(self.weight, x)
        # the value as the model computes it, so that later masks fall exactly as they do there
        value = F.batch_norm(
            x, mean, var, parameter(self.weight, x), parameter(self.bias, x), False, 0.0, self.eps
        )
        scale = scale.reshape(-1, *(1,) * (x.ndim - 2))
        return pointwise(value, scale)
