"""Class templates against exact rows: the experiment of chapter 5.

For a digit classifier, the data-independent virtual matrix (ReLU as the identity, MaxPool as
AvgPool) gives one template per class; the exact virtual matrix at a digit ``x`` gives that
digit's own rows, carved by its masks, with ``model(x) = J(x)·x + b(x)``. :func:`study_templates`
measures how far the two readings of "classification is template matching" agree on a test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kronlib.data import Digits
from kronlib.saliency import saliency_batch
from kronlib.virtual import virtual_matrix

__all__ = ["TemplateStudy", "study_templates"]


@dataclass(frozen=True)
class TemplateStudy:
    """Templates and exact rows of one classifier on one test set.

    Attributes:
        templates: ``(K, *in_shape)`` data-independent rows, one per class.
        offsets: ``(K,)`` their offsets (the biases through the linearised network).
        mean_rows: ``(K, *in_shape)``: per class ``k``, the mean of the exact row ``J(x)[k]``
            over the test digits the network assigns to ``k``.
        predictions: ``(N,)`` the network's classes.
        template_predictions: ``(N,)`` the classes of the templates alone,
            ``argmax_k (templates[k]·x + offsets[k])``.
        accuracy: the network's test accuracy.
        agreement: how often the templates alone pick the network's class.
        cosines: ``(K,)`` cosine similarity between ``templates[k]`` and ``mean_rows[k]``.
    """

    templates: torch.Tensor
    offsets: torch.Tensor
    mean_rows: torch.Tensor
    predictions: torch.Tensor
    template_predictions: torch.Tensor
    accuracy: float
    agreement: float
    cosines: torch.Tensor

    @property
    def mean_cosine(self) -> float:
        """The cosine averaged over the classes."""
        return float(self.cosines.mean())


def study_templates(model: nn.Module, digits: Digits, batch_size: int = 500) -> TemplateStudy:
    """Compare a classifier's data-independent templates with its exact rows on ``digits``.

    The exact rows of all digits come from one backward pass per batch (gradient saliency,
    which chapter 6 shows is the exact virtual-matrix row); the templates from
    :func:`kronlib.virtual.virtual_matrix` without ``x``.

    Args:
        model: a classifier in eval mode, ``(N, *in_shape) → (N, K)``.
        digits: the test set.
        batch_size: digits per backward pass.

    Returns:
        :class:`TemplateStudy`.
    """
    images, labels = digits.images, digits.labels
    in_shape = tuple(images.shape[1:])
    templates, offsets = virtual_matrix(model, input_shape=in_shape, bias=True)
    with torch.no_grad():
        predictions = torch.cat(
            [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        )
    scores = images.flatten(1).to(templates.dtype) @ templates.flatten(1).T + offsets
    template_predictions = scores.argmax(1)
    rows = torch.cat(
        [
            saliency_batch(model, images[i : i + batch_size], predictions[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
    )
    classes = templates.shape[0]
    mean_rows = torch.stack(
        [
            rows[predictions == k].mean(0) if bool((predictions == k).any()) else rows[0] * 0
            for k in range(classes)
        ]
    )
    cosines = torch.nn.functional.cosine_similarity(
        templates.flatten(1), mean_rows.flatten(1).to(templates.dtype), dim=1
    )
    return TemplateStudy(
        templates=templates,
        offsets=offsets,
        mean_rows=mean_rows,
        predictions=predictions,
        template_predictions=template_predictions,
        accuracy=float((predictions == labels).double().mean()),
        agreement=float((template_predictions == predictions).double().mean()),
        cosines=cosines,
    )
