"""kronlib.color: chroma, uniformity and block means."""

import pytest
import torch

from kronlib.color import block_means, chroma_fraction, uniform_fraction


def test_chroma_of_gray_and_of_a_pure_contrast():
    gray = torch.rand(4, 4, 1).expand(4, 4, 3)
    assert chroma_fraction(gray) == pytest.approx(0.0, abs=1e-12)
    contrast = torch.tensor([1.0, 0.0, -1.0]).expand(4, 4, 3)  # channels sum to zero
    assert chroma_fraction(contrast) == pytest.approx(1.0)


def test_uniformity_of_a_solid_tint_and_of_a_checkerboard():
    assert uniform_fraction(torch.tensor([0.2, 0.5, 0.9]).expand(3, 5, 3)) == pytest.approx(1.0)
    signs = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])[..., None].expand(2, 2, 3)
    assert uniform_fraction(signs) == pytest.approx(0.0)


def test_block_means():
    A = torch.arange(16.0).reshape(4, 4)
    assert block_means(A, (2, 2)).tolist() == [[2.5, 4.5], [10.5, 12.5]]
    assert block_means(torch.ones(4, 6, 3), (2, 3)).shape == (2, 3, 3)


def test_bad_input():
    with pytest.raises(ValueError, match=r"x must have shape \(H, W, 3\), got a 2-D array"):
        chroma_fraction(torch.ones(2, 2))
    with pytest.raises(ValueError, match="x must have 3 channels last"):
        uniform_fraction(torch.ones(2, 2, 4))
    with pytest.raises(ValueError, match=r"grid_shape \(3, 3\) must divide the image shape"):
        block_means(torch.ones(4, 4), (3, 3))
