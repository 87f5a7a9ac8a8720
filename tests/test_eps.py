"""The LayerNorm epsilon reaches every backend and module: a non-default eps gives the
float64 formula's output and gradients everywhere, and the default stays 1e-5."""

import inspect

import pytest
import torch
from torch import nn

import rpt_fast
from rpt_fast import FusedResidualMLP, ResidualMLP, ResidualPromptEncoder
from rpt_fast.modules import GroupedResidualMLP, ResidualMLPLoop
from rpt_fast.ops import reference

BACKENDS = ["eager", "native", "triton"]  # triton through the interpreter on CPU
EPS = 1e-2


def by_hand(x, w1, b1, w2, b2, g, beta, eps):
    """The (shared or grouped) encoder in float64, written out independently of the library."""
    grouped = w1.dim() == 3
    h = torch.einsum("nmd,nd->nm" if grouped else "md,nd->nm", w1, x) + b1
    z = torch.einsum("ndm,nm->nd" if grouped else "dm,nm->nd", w2, h.clamp_min(0.0)) + b2
    mu = z.sum(-1, keepdim=True) / z.shape[-1]
    var = ((z - mu) ** 2).sum(-1, keepdim=True) / z.shape[-1]
    return (z - mu) / torch.sqrt(var + eps) * g + beta + x


def small_variance_inputs(grouped, n=5, d=12, m=6):
    """Rows of z with variance ~5e-3, so eps=1e-2 changes the output by tens of percent and the
    default 1e-5 against 1e-6 by ~1e-3: an eps that does not arrive cannot pass."""
    lead = (n,) if grouped else ()
    x = torch.randn(n, d)
    w1 = torch.randn(*lead, m, d) / d**0.5
    b1 = 0.1 * torch.randn(*lead, m)
    w2 = 0.1 * torch.randn(*lead, d, m) / m**0.5
    b2 = 0.01 * torch.randn(*lead, d)
    g = 1 + 0.1 * torch.randn(*lead, d)
    beta = 0.1 * torch.randn(*lead, d)
    return [x, w1, b1, w2, b2, g, beta]


def value_and_grads(fn, inputs, dy):
    leaves = [t.detach().requires_grad_() for t in inputs]
    y = fn(*leaves)
    return [y, *torch.autograd.grad(y, leaves, dy)]


def max_relative_error(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1.0)).item()


def check(fn, inputs, eps, tol=2e-5):
    """fn(*inputs) (fp32) against the float64 formula at ``eps``, value and all gradients."""
    dy = torch.randn_like(inputs[0])
    got = value_and_grads(fn, inputs, dy)
    want = value_and_grads(lambda *t: by_hand(*t, eps), [t.double() for t in inputs], dy.double())
    for name, a, b in zip(("y", "x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias"), got, want):
        assert max_relative_error(a, b) < tol, name


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
def test_the_inputs_make_eps_matter(grouped):
    inputs = [t.double() for t in small_variance_inputs(grouped)]
    assert max_relative_error(by_hand(*inputs, EPS), by_hand(*inputs, 1e-5)) > 0.1
    assert max_relative_error(by_hand(*inputs, 1e-6), by_hand(*inputs, 1e-5)) > 1e-4


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_default_eps_on_every_backend(backend, grouped):
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    check(lambda *t: op(*t, EPS, backend=backend), small_variance_inputs(grouped), EPS)


@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_default_eps_is_1e_5_on_every_backend(backend, grouped):
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    check(lambda *t: op(*t, backend=backend), small_variance_inputs(grouped), 1e-5)


def _module_params(module):
    """(w1, b1, w2, b2, ln_weight, ln_bias) of a fused or grouped module."""
    if isinstance(module, GroupedResidualMLP):
        names = ("down_weight", "down_bias", "up_weight", "up_bias", "norm_weight", "norm_bias")
        return [getattr(module, n) for n in names]
    return [module.down.weight, module.down.bias, module.up.weight, module.up.bias,
            module.norm.weight, module.norm.bias]


def _load(module, params):
    with torch.no_grad():
        for p, value in zip(_module_params(module), params):
            p.copy_(value)
    return module


def check_module(module, eps, grouped):
    x, *params = small_variance_inputs(grouped)
    _load(module, params)
    dy = torch.randn_like(x)
    xg = x.clone().requires_grad_()
    y = module(xg)
    got = [y, *torch.autograd.grad(y, [xg, *_module_params(module)], dy)]
    want = value_and_grads(lambda *t: by_hand(*t, eps), [x.double()] + [p.double() for p in params], dy.double())
    for name, a, b in zip(("y", "x", "w1", "b1", "w2", "b2", "ln_weight", "ln_bias"), got, want):
        assert max_relative_error(a, b) < 2e-5, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_modules_pass_their_eps(backend):
    check_module(FusedResidualMLP(12, 6, eps=EPS, backend=backend), EPS, grouped=False)
    check_module(GroupedResidualMLP(12, 6, num_groups=5, eps=EPS, backend=backend), EPS, grouped=True)
    for separate in (False, True):
        enc = ResidualPromptEncoder(5, 12, 6, separate=separate, eps=EPS, backend=backend)
        check_module(enc.mlp, EPS, grouped=separate)


@pytest.mark.parametrize("backend", BACKENDS)
def test_modules_default_to_1e_5(backend):
    check_module(FusedResidualMLP(12, 6, backend=backend), 1e-5, grouped=False)
    check_module(GroupedResidualMLP(12, 6, num_groups=5, backend=backend), 1e-5, grouped=True)


def test_converters_carry_eps(official_resmlp):
    eager = ResidualMLP(12, 6, eps=EPS)
    assert FusedResidualMLP.from_eager(eager).norm.eps == EPS
    assert FusedResidualMLP.from_eager(eager).to_eager().norm.eps == EPS
    seq = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 12), nn.LayerNorm(12, eps=EPS))
    check_module(FusedResidualMLP.from_eager(seq, backend="native"), EPS, grouped=False)
    official = official_resmlp(12, 6, eps=EPS)
    check_module(FusedResidualMLP.from_eager(official, backend="native"), EPS, grouped=False)
    grouped = GroupedResidualMLP.from_eager([ResidualMLP(12, 6, eps=EPS) for _ in range(5)])
    assert grouped.eps == EPS
    check_module(grouped, EPS, grouped=True)
    loop = grouped.to_eager()
    assert isinstance(loop, ResidualMLPLoop) and all(mlp.norm.eps == EPS for mlp in loop)


@pytest.mark.parametrize(
    "fn",
    [rpt_fast.residual_mlp, rpt_fast.grouped_residual_mlp, reference.residual_mlp_reference,
     reference.grouped_residual_mlp_reference, ResidualMLP, GroupedResidualMLP, ResidualPromptEncoder],
    ids=lambda fn: fn.__name__,
)
def test_every_default_eps_is_1e_5(fn):
    assert inspect.signature(fn).parameters["eps"].default == 1e-5
