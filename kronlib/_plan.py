"""Compiled plans for the rows of a plain chain: one loop forward, one loop back.

A plain chain (:attr:`kronlib.graph.TracedModel.chain`) linearised once by the general path
(:func:`kronlib.graph.linearise`, which binds and checks every rule and names what does not fit)
is compiled into a :class:`ChainPlan` for that input layout (shape, dtype, device) and policy:
each layer's rule gives a :class:`~kronlib.rules.Stage` with everything that does not depend on
the point chosen once (the transposed convolution's kernel branch and paddings, shapes). A call
is then a loop of ``run`` (the values, keeping only what the rows need: masks, picks, weights)
and a loop of ``back`` — the same operations as the general path, without building its
:class:`~kronlib.graph.Linearisation`.

Parameters are read at each call (a weight changed in place, or through ``.data``, is seen); a
trace is dropped with its plans when the model's Python state changes (:mod:`kronlib._cache`).
A plan that fails at a call (a weight of another shape) is dropped and the general path runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from kronlib.graph import Linearisation
from kronlib.rules import Policy, Rule
from kronlib.rules.base import Linearised, Stage

__all__ = ["PLAN_FAILURES", "ChainPlan", "compile_chain", "identity_rows", "layout"]

# what a stage raises when the model no longer fits the plan (the general path then names it):
# StaleStageError (a RuntimeError), or torch's own RuntimeError for shapes that no longer match;
# other errors are bugs, and are raised
PLAN_FAILURES = (RuntimeError,)
# the identity rows are kept with the plan up to this many entries (LeNet's 10 × 10); larger ones
# are made at each call, as the general path makes them
_KEPT_IDENTITY = 1 << 12


def identity_rows(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """``(numel, *shape)``: one row per entry of ``shape``, a one at it (``like``'s dtype/device).

    A base tensor (no view of another), so that a view of it names it as its ``_base``.
    """
    n = math.prod(shape)
    rows = torch.zeros(n, *shape, dtype=like.dtype, device=like.device)
    rows.view(n, n).fill_diagonal_(1)
    return rows


def layout(point: torch.Tensor, policy: Policy) -> tuple[Any, ...]:
    """The key of a plan: the input's shape, dtype and device (no batch axis) and the policy.

    The policy's fields, not the policy (whose dataclass ``__eq__`` and ``__hash__`` run in
    Python).
    """
    return (policy.exact, policy.average_maxpool, tuple(point.shape), point.dtype, point.device)


@dataclass(frozen=True)
class ChainPlan:
    """A plain chain compiled for one input layout and policy.

    Attributes:
        runs: each layer's ``run``, input to output.
        backs: each layer's ``back``, output to input.
        out_shape: the model's output shape (no batch axis).
        nodes: each layer's node, input to output.
        row_bytes: the bytes of one row at each layer's output, input to output.
        kept: ``{"identity": (out_numel, *out_shape)}``, every output's one-hot row, kept once
            made when small (never written into, nor handed out).
    """

    runs: tuple[Callable[[torch.Tensor], tuple[torch.Tensor, Any]], ...]
    backs: tuple[Callable[[torch.Tensor, Any, bool], tuple[torch.Tensor, bool]], ...]
    out_shape: tuple[int, ...]
    nodes: tuple[fx.Node, ...] = ()
    row_bytes: tuple[int, ...] = ()
    kept: dict[str, torch.Tensor] = field(default_factory=dict)

    def identity(self, like: torch.Tensor) -> torch.Tensor:
        """``(out_numel, *out_shape)``: every output's one-hot row, in ``like``'s dtype/device."""
        identity = self.kept.get("identity")
        if identity is None:
            identity = identity_rows(self.out_shape, like)
            if identity.numel() <= _KEPT_IDENTITY:
                self.kept["identity"] = identity
        return identity

    def rows(
        self, point: torch.Tensor, seed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The model's output at ``point`` and ``seed``'s rows sent back to the input.

        Args:
            point: ``in_shape``, the point (never written into).
            seed: ``(n, *out_shape)`` rows on the output (never written into); ``None`` for
                every output (:meth:`identity`).

        Returns:
            ``(value, rows)``: ``(1, *out_shape)`` and ``(n, *in_shape)``; ``None`` when the
            model no longer fits the plan (the caller then takes the general path).
        """
        start = self.identity(point) if seed is None else seed
        try:
            with torch.no_grad():
                value, saved, _ = self.run(point)
                cot = self.send_back(saved, start)
        except PLAN_FAILURES:
            return None
        if start is self.kept.get("identity") and (cot is start or cot._base is start):
            cot = cot.clone()  # a chain of identities and reshapes: the identity is the plan's
        return value, cot

    def run(
        self, point: torch.Tensor, layers: int | None = None, keep: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list, dict[int, torch.Tensor]]:
        """``(value, saved, kept)``: the first ``layers`` layers (all with ``None``) at ``point``.

        ``value`` is ``(1, *shape)``, the last of those layers' output; ``saved`` what each of
        them keeps for :meth:`send_back`; ``kept`` the output of the first ``k`` layers for each
        ``k`` in ``keep``. Raises what a stage raises when the model no longer fits (a
        RuntimeError); call under ``torch.no_grad()``.
        """
        value, saved, kept_values = point.unsqueeze(0), [], {}
        for count, run in enumerate(self.runs[:layers], start=1):
            value, kept = run(value)
            saved.append(kept)
            if count in keep:
                kept_values[count] = value
        return value, saved, kept_values

    def send_back(self, saved: list, seed: torch.Tensor, stop: int = 0) -> torch.Tensor:
        """Rows on the output of the layers :meth:`run` ran, sent back to the input.

        ``seed`` is ``(n, *shape)`` on that output (never written into). With ``stop``, only to
        the output of the first ``stop`` layers: ``(n, *shape_stop)``; ``(n, *in_shape)``
        without.
        """
        cot, owned = seed, False
        backs = self.backs[len(self.backs) - len(saved) : len(self.backs) - stop]
        for back, kept in zip(backs, reversed(saved[stop:]), strict=True):
            cot, owned = back(cot, kept, owned)
        return cot


def compile_chain(lin: Linearisation, policy: Policy) -> ChainPlan | None:
    """The plan of a plain chain linearised in full at one point under ``policy``, or ``None``.

    ``None`` for a linearisation that is not a whole plain chain, an approximate one (whose
    offset needs every step's affine map: :func:`kronlib.graph.affine_offset`), or one through a
    layer whose attributes are computed when read (a parametrized weight, which a stage would
    hold as it was).
    """
    traced = lin.traced
    if not lin.chain or traced.chain is None or len(lin.steps) != len(traced.chain):
        return None
    if lin.approximate:
        return None
    if any(node not in traced.bound for node in lin.steps):
        return None  # a layer bound again at each call (its attributes are computed)
    stages, source = [], lin.input
    for node, step in lin.steps.items():
        x, value = lin.values[source], lin.values[node]
        stages.append(step.rule.stage(x, value, policy) or _general_stage(step.rule, policy))
        source = node
    values = [lin.values[node] for node in lin.steps]
    return ChainPlan(
        tuple(s.run for s in stages),
        tuple(s.back for s in reversed(stages)),
        tuple(lin.values[lin.output].shape[1:]),
        tuple(lin.steps),
        tuple(v[0].numel() * v.element_size() for v in values),
    )


def _general_stage(rule: Rule, policy: Policy) -> Stage:
    """A rule without a stage of its own: :meth:`Rule.linearise` at each call."""

    def run(x: torch.Tensor) -> tuple[torch.Tensor, Linearised]:
        lin = rule.linearise([x], policy)
        return lin.value, lin

    def back(cot: torch.Tensor, lin: Linearised, owned: bool) -> tuple[torch.Tensor, bool]:
        (cot,), owned = lin.pull(cot, owned)
        return cot, owned

    return Stage(run, back)
