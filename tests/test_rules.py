"""kronlib.rules: each layer type's rule against torch.func (value, jvp and vjp), float64."""

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kronlib.rules import (
    RULES,
    Field,
    Policy,
    Variable,
    rule_for_function,
    rule_for_method,
    rule_for_module,
)
from kronlib.rules.pool import MaxPool

EXACT = Policy(exact=True)


def _bn(channels: int, affine: bool = True) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, affine=affine)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    if affine:
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return bn.eval()


# (module, input shape without batch)
MODULE_CASES = [
    (nn.Conv2d(2, 3, 3), (2, 7, 7)),
    (nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=2), (2, 9, 8)),
    (nn.Conv2d(4, 4, 3, groups=2, padding=1), (4, 6, 6)),
    (nn.Conv2d(2, 3, 4, padding="same"), (2, 7, 7)),
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 6, 6)),
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (2, 6, 6)),
    (nn.Linear(12, 5), (12,)),
    (nn.ReLU(), (3, 5, 5)),
    (nn.ReLU(inplace=True), (3, 5, 5)),
    (nn.LeakyReLU(0.1), (3, 5, 5)),
    (nn.MaxPool2d(2), (2, 6, 6)),
    (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 7, 7)),
    (nn.MaxPool2d(2, dilation=2), (2, 7, 7)),
    (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 7)),
    (nn.AdaptiveAvgPool2d((3, 2)), (2, 7, 5)),
    (_bn(3), (3, 4, 4)),
    (_bn(3, affine=False), (3, 4, 4)),
    (nn.Flatten(), (2, 3, 3)),
    (nn.Dropout(0.5).eval(), (6,)),
    (nn.Identity(), (2, 3)),
]


def _check_rule(rule, variables, fn, inputs):
    """The rule's value, forward and pullback against fn, torch.func.jvp and torch.func.vjp."""
    lin = rule.linearise(variables, EXACT)
    value = fn(*inputs)
    torch.testing.assert_close(lin.value, value, rtol=1e-12, atol=1e-12)
    generator = torch.Generator().manual_seed(1)
    tangents = [torch.randn(x.shape, generator=generator, dtype=x.dtype) for x in inputs]
    _, jvp = torch.func.jvp(fn, tuple(inputs), tuple(tangents))
    torch.testing.assert_close(lin.forward(tangents), jvp, rtol=1e-12, atol=1e-12)
    cot = torch.randn(value.shape, generator=generator, dtype=value.dtype)
    _, vjp = torch.func.vjp(fn, *inputs)
    for mine, theirs in zip(lin.pullback(cot), vjp(cot), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("module", "shape"), MODULE_CASES, ids=lambda c: repr(c)[:40])
def test_module_rule_matches_autograd(module, shape):
    torch.manual_seed(0)
    module = module.double()
    x = torch.randn(1, *shape, dtype=torch.float64)
    rule = rule_for_module(module).from_module(module)
    assert rule.why_not() is None
    _check_rule(rule, [x], lambda inp: module(inp.clone()), [x])


FUNCTION_CASES = [
    (F.conv2d, lambda x: (x, torch.randn(3, 2, 3, 3, dtype=x.dtype)), {"stride": 2}),
    (F.linear, lambda x: (x.flatten(1), torch.randn(4, x[0].numel(), dtype=x.dtype)), {}),
    (F.relu, lambda x: (x,), {}),
    (torch.relu, lambda x: (x,), {}),
    (F.leaky_relu, lambda x: (x, 0.3), {}),
    (F.leaky_relu, lambda x: (x,), {}),  # the default slope 0.01
    (F.max_pool2d, lambda x: (x, 2), {}),
    (F.avg_pool2d, lambda x: (x, 2), {"stride": 1}),
    (F.adaptive_avg_pool2d, lambda x: (x, 1), {}),
    (torch.flatten, lambda x: (x, 1), {}),
    (operator.add, lambda x: (x, 2 * x), {}),
    (operator.sub, lambda x: (x, 0.5), {}),
    (operator.mul, lambda x: (x, 3.0), {}),
    (operator.truediv, lambda x: (x, 4.0), {}),
    (torch.cat, lambda x: ([x, -x],), {"dim": 1}),
]


@pytest.mark.parametrize(("fn", "make_args", "kwargs"), FUNCTION_CASES, ids=lambda c: str(c)[:30])
def test_function_rule_matches_autograd(fn, make_args, kwargs):
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    args = make_args(x)
    # the rule sees its input as a Variable; for sums of x with itself, two inputs of one value
    variables = {}

    def wrap(a):
        if isinstance(a, torch.Tensor) and a.shape[0] == 1 and a.dtype == torch.float64:
            variables[id(a)] = Variable(a)
            return variables[id(a)]
        if isinstance(a, list):
            return [wrap(b) for b in a]
        return a

    wrapped = [wrap(a) for a in args]
    given, rule = rule_for_function(fn).from_call(*wrapped, **kwargs)
    inputs = [v.value for v in given]

    def call(*values):
        it = iter(values)
        rebuilt = [
            next(it)
            if isinstance(a, Variable)
            else [next(it) for _ in a]
            if isinstance(a, list)
            else a
            for a in wrapped
        ]
        return fn(*rebuilt, **kwargs)

    _check_rule(rule, inputs, call, inputs)


def test_every_rule_is_reachable_and_leaky_default_slope_is_kept():
    for rule in RULES:
        assert rule.modules or rule.functions or rule.methods, rule
    assert rule_for_method("relu_") is rule_for_method("relu")
    assert rule_for_method("view") is rule_for_method("reshape")
    _, rule = rule_for_function(F.leaky_relu).from_call(Variable(torch.zeros(1)))
    assert rule.slope == 0.01


def test_leaky_slope_is_not_rounded_to_float32():
    x = -torch.ones(1, 3, dtype=torch.float64)
    lin = rule_for_module(nn.LeakyReLU(0.1)).from_module(nn.LeakyReLU(0.1)).linearise([x], EXACT)
    assert lin.forward([torch.ones(1, 3, dtype=torch.float64)])[0, 0].item() == 0.1


def test_data_independent_stand_ins():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    free = Policy(exact=False)
    relu = rule_for_module(nn.ReLU()).from_module(nn.ReLU()).linearise([x], free)
    torch.testing.assert_close(relu.value, x)
    pool = MaxPool(2).linearise([x], free)
    torch.testing.assert_close(pool.value, F.avg_pool2d(x, 2))
    with pytest.raises(ValueError, match="dilated MaxPool2d has no AvgPool2d stand-in"):
        MaxPool(2, dilation=2).linearise([x], free)


def test_subclasses_with_their_own_code_are_not_taken_for_their_base():
    class Plain(nn.Conv2d):
        pass

    class Standardised(nn.Conv2d):
        def forward(self, x):
            w = self.weight - self.weight.mean()
            return F.conv2d(x, w, self.bias)

    class Shifted(nn.ReLU):
        def _shift(self):
            return 0.5

    assert rule_for_module(Plain(1, 1, 1)) is rule_for_module(nn.Conv2d(1, 1, 1))
    assert rule_for_module(Standardised(1, 1, 1)) is None
    assert rule_for_module(Shifted()) is None


def test_receptive_fields_grow_through_the_rules():
    conv = rule_for_module(nn.Conv2d(1, 1, 5)).from_module(nn.Conv2d(1, 1, 5))
    field = conv.receptive_field(Field(), 32)
    assert (field.size, field.jump) == (5, 1)
    pool = MaxPool(2).receptive_field(field, 32)
    assert (pool.size, pool.jump) == (6, 2)
