"""Module front ends: eager ResidualMLP semantics, the fused drop-in on every CPU backend,
state_dict compatibility, converters (the official ResMLP included), fallbacks and the prompt
encoder. torch.compile is in test_compile.py."""

import warnings

import pytest
import torch
from torch import nn

import rpt_fast
from rpt_fast import FusedResidualMLP, ResidualMLP, ResidualPromptEncoder
from rpt_fast.modules import _warned

# Every backend that serves CPU tensors in CI (triton through the interpreter).
CPU_BACKENDS = ["eager", "native", "triton"]


def _randomize(module):
    """Fresh random parameters (LayerNorm gains near 1), never the zero biases of init."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        if module.norm is not None:
            module.norm.weight.add_(1.0)
    return module


def test_residual_mlp_is_the_official_sequential_plus_input():
    eager = _randomize(ResidualMLP(16, 8, dtype=torch.float64))
    seq = nn.Sequential(eager.down, nn.ReLU(), eager.up, eager.norm)
    x = torch.randn(5, 16, dtype=torch.float64)
    torch.testing.assert_close(eager(x), seq(x) + x)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fused_matches_eager_forward_and_grads(backend):
    eager = _randomize(ResidualMLP(24, 10))
    fused = FusedResidualMLP.from_eager(eager, backend=backend)
    x = torch.randn(2, 7, 24)
    xe, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye = eager(xe)
    ge = torch.autograd.grad(ye.square().sum(), [xe, *eager.parameters()])
    yf = fused(xf)
    gf = torch.autograd.grad(yf.square().sum(), [xf, *fused.parameters()])
    torch.testing.assert_close(yf, ye, atol=1e-4, rtol=1e-4)
    for a, b in zip(gf, ge):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_state_dicts_load_both_ways():
    eager = _randomize(ResidualMLP(12, 6, dropout=0.1))
    fused = FusedResidualMLP(12, 6, dropout=0.1, backend="eager")
    assert fused.state_dict().keys() == eager.state_dict().keys()
    fused.load_state_dict(eager.state_dict())
    back = ResidualMLP(12, 6, dropout=0.1)
    back.load_state_dict(fused.state_dict())
    for k, v in eager.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def test_from_eager_and_to_eager_share_parameters():
    eager = ResidualMLP(12, 6)
    fused = FusedResidualMLP.from_eager(eager)
    assert fused.down.weight is eager.down.weight and fused.norm.bias is eager.norm.bias
    again = fused.to_eager()
    assert type(again) is ResidualMLP and again.up.weight is eager.up.weight


@pytest.mark.parametrize("with_dropout", [False, True])
def test_from_official_sequential_layout(with_dropout):
    layers = [nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 12)]
    layers += [nn.Dropout(0.2)] if with_dropout else []
    layers += [nn.LayerNorm(12)]
    seq = _randomize_seq(nn.Sequential(*layers)).eval()
    fused = FusedResidualMLP.from_eager(seq, backend="eager")
    assert fused.dropout.p == (0.2 if with_dropout else 0.0)
    x = torch.randn(3, 12)
    torch.testing.assert_close(fused(x), seq(x) + x)


def _randomize_seq(seq):
    with torch.no_grad():
        for p in seq.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return seq


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_from_official_resmlp_runs_fused_and_shares_parameters(official_resmlp, backend):
    official = official_resmlp(12, 6, dropout=0.2).eval()
    _warned.clear()
    fused = FusedResidualMLP.from_eager(official, backend=backend)
    assert type(fused) is FusedResidualMLP and not fused.training and fused.residual
    assert fused.down.weight is official.module[0].weight and fused.norm.bias is official.module[4].bias
    x = torch.randn(3, 12)
    xo, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo = official(xo)
    go = torch.autograd.grad(yo.square().sum(), [xo, *official.parameters()])
    with warnings.catch_warnings():
        # The fused path: no fallback warning (only that one: the Triton 3.6 interpreter's numpy
        # use warns on its own).
        warnings.filterwarnings("error", message=".*runs the eager path")
        yf = fused(xf)
    gf = torch.autograd.grad(yf.square().sum(), [xf, *fused.parameters()])
    torch.testing.assert_close(yf, yo, atol=1e-4, rtol=1e-4)
    for a, b in zip(gf, go):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("residual", [False, 0], ids=["False", "0"])
def test_from_official_resmlp_without_residual_keeps_it_off(official_resmlp, residual):
    official = official_resmlp(12, 6, residual=residual)
    _warned.clear()
    fused = FusedResidualMLP.from_eager(official, backend="native")
    assert fused.residual is False and fused.to_eager().residual is False
    x = torch.randn(3, 12)
    with pytest.warns(UserWarning, match="eager path for residual=False"):
        got = fused(x)
    torch.testing.assert_close(got, official(x))
    assert (got - official.module(x)).abs().max() == 0  # no input added


def test_from_official_resmlp_rejects_other_module_types(official_resmlp):
    mlp2 = official_resmlp(8, 4)
    mlp2.module = nn.Sequential(*mlp2.module, *mlp2.module)  # module_type='MLP2' repeats the layers
    with pytest.raises(TypeError, match=r"module.module: expected nn.Sequential\(Linear, ReLU, Linear"):
        FusedResidualMLP.from_eager(mlp2)
    lstm = official_resmlp(8, 4)
    del lstm.module  # the LSTM types have no Sequential
    with pytest.raises(TypeError, match="expected a ResidualMLP, the official ResMLP .* got OfficialStyleResMLP"):
        FusedResidualMLP.from_eager(lstm)


def test_from_eager_rejects_other_layouts():
    with pytest.raises(TypeError, match=r"got nn.Sequential\(Linear, Linear\)"):
        FusedResidualMLP.from_eager(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    with pytest.raises(TypeError, match="got Linear"):
        FusedResidualMLP.from_eager(nn.Linear(4, 4))


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"activation": "tanh"}, "activation='tanh'"),
        ({"layer_norm": False}, "layer_norm=False"),
        ({"residual": False}, "residual=False"),
        ({"dropout": 0.3}, "dropout=0.3 in training mode"),
    ],
)
def test_unfused_configs_fall_back_to_eager_with_one_warning(kwargs, reason):
    _warned.clear()
    eager = _randomize(ResidualMLP(8, 4, **kwargs))
    fused = FusedResidualMLP.from_eager(eager)
    x = torch.randn(3, 8)
    with pytest.warns(UserWarning, match=f"eager path for {reason}"):
        torch.manual_seed(1)
        got = fused(x)
    torch.manual_seed(1)
    torch.testing.assert_close(got, eager(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused(x)


def test_dropout_is_fused_in_eval_mode():
    fused = FusedResidualMLP(8, 4, dropout=0.5).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused(torch.randn(3, 8))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"activation": "swish"}, ValueError, "activation: expected one of"),
        ({"dropout": 1.0}, ValueError, r"dropout: expected a probability in \[0, 1\), got 1.0"),
        ({"backend": "gpu"}, ValueError, "backend: expected one of"),
    ],
)
def test_bad_module_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        FusedResidualMLP(8, 4, **kwargs)


def test_bad_sizes():
    with pytest.raises(ValueError, match="bottleneck: expected a positive int, got 0"):
        ResidualMLP(8, 0)
    with pytest.raises(ValueError, match="num_tokens: expected a positive int, got 0"):
        ResidualPromptEncoder(0, 8, 4)


def test_prompt_encoder_forward_and_projected_prompt():
    enc = ResidualPromptEncoder(10, 16, 8, dropout=0.5, backend="eager")
    assert enc.num_tokens == 10
    enc.train()
    projected = enc.projected_prompt()
    assert enc.training and not projected.requires_grad
    expected = enc.mlp.to_eager().eval()(enc.prompt).detach()
    torch.testing.assert_close(projected, expected)
    out = enc()
    assert out.shape == (10, 16) and out.requires_grad


def test_prompt_encoder_init():
    init = torch.randn(4, 8)
    enc = ResidualPromptEncoder(4, 8, 3, init=init)
    assert torch.equal(enc.prompt.detach(), init)
    assert ResidualPromptEncoder(4, 8, 3).prompt.abs().max() <= 0.5
    with pytest.raises(ValueError, match=r"init: expected a tensor of shape \(4, 8\), got \(3, 8\)"):
        ResidualPromptEncoder(4, 8, 3, init=torch.randn(3, 8))


def test_readme_op_example_runs_where_there_is_no_gpu():
    """README's first code block ("The op") as written, on whatever device this machine has."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The op\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented snippet itself
    x, mlp, y = namespace["x"], namespace["mlp"], namespace["y"]
    expected = rpt_fast.residual_mlp(x, mlp.down.weight, mlp.down.bias, mlp.up.weight, mlp.up.bias, mlp.norm.weight,
                                     mlp.norm.bias, eps=1e-5, backend="eager")
    assert y.device == x.device and y.shape == x.shape and x.grad is not None
    torch.testing.assert_close(y, expected, atol=3e-2, rtol=2e-2)  # bf16
