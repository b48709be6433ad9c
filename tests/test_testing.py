"""kronlib.testing: the assertions themselves must be able to fail."""

import pytest
import torch

from kronlib.testing import assert_relative_close, default_rtol, jacobian, relative_error


def test_relative_error_and_tolerances():
    assert relative_error(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == 1.0
    assert default_rtol(torch.float32) == 1e-5 and default_rtol(torch.float64) == 1e-12


def test_assert_relative_close_fails_on_a_real_difference():
    x = torch.ones(10, dtype=torch.float64)
    assert_relative_close(x, x)
    with pytest.raises(AssertionError, match=r"sum: relative error 1\.000e-06 exceeds"):
        assert_relative_close(x * (1 + 1e-6), x, what="sum")
    with pytest.raises(ValueError, match="one shape"):
        relative_error(torch.ones(2), torch.ones(3))


def test_jacobian_of_a_linear_layer_is_its_weight_and_is_detached():
    layer = torch.nn.Linear(5, 3)
    J = jacobian(layer, torch.randn(5))
    assert J.shape == (3, 5) and not J.requires_grad
    assert torch.allclose(J, layer.weight.detach())
    conv = torch.nn.Conv2d(2, 4, 3)
    assert jacobian(conv, torch.randn(2, 6, 6)).shape == (4, 4, 4, 2, 6, 6)
