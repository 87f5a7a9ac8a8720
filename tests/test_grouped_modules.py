"""The separate=True modules: GroupedResidualMLP against its eager reference (a loop of
ResidualMLPs) on every CPU backend, state_dicts both ways, converters, the eager fallback,
the prompt encoder. torch.compile is in test_compile.py."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from rpt_fast import FusedResidualMLP, ResidualMLP, ResidualPromptEncoder
from rpt_fast.modules import GroupedResidualMLP, ResidualMLPLoop, _warned

# Every backend that serves CPU tensors in CI (triton through the interpreter).
CPU_BACKENDS = ["eager", "native", "triton"]
KEYS = {"down_weight", "down_bias", "up_weight", "up_bias", "norm_weight", "norm_bias"}


def _randomize(module):
    """Fresh random parameters (LayerNorm gains near 1), never the zero biases of init."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "norm" in name and "weight" in name else 0.0))
    return module


def _loop(n, d, m, **kwargs):
    return _randomize(ResidualMLPLoop(ResidualMLP(d, m, **kwargs) for _ in range(n)))


def _stacked_grads(loop):
    """The loop's parameter grads stacked per name, in GroupedResidualMLP's order."""
    grads = {}
    for mlp in loop:
        for name, p in mlp.named_parameters():
            grads.setdefault(name.replace(".", "_"), []).append(p.grad)
    return {name: torch.stack(g) for name, g in grads.items()}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_grouped_matches_the_eager_loop(backend):
    loop = _loop(3, 24, 10)
    grouped = GroupedResidualMLP.from_eager(loop, backend=backend)
    x = torch.randn(3, 24)
    xe, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye, yg = loop(xe), grouped(xg)
    ye.square().sum().backward()
    yg.square().sum().backward()
    torch.testing.assert_close(yg, ye, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xg.grad, xe.grad, atol=1e-3, rtol=1e-3)
    expected = _stacked_grads(loop)
    for name, p in grouped.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-3, rtol=1e-3, msg=name)


def test_fused_constructor_builds_the_grouped_module():
    fused = FusedResidualMLP(16, 8, separate=True, num_groups=5, backend="eager")
    assert type(fused) is GroupedResidualMLP and fused.num_groups == 5
    assert fused.down_weight.shape == (5, 8, 16) and fused.up_weight.shape == (5, 16, 8)
    assert set(fused.state_dict()) == KEYS
    assert type(FusedResidualMLP(16, 8)) is FusedResidualMLP
    with pytest.raises(ValueError, match="num_groups: required with separate=True"):
        FusedResidualMLP(16, 8, separate=True)
    with pytest.raises(ValueError, match=r"num_groups: only used with separate=True \(one MLP per row\), got 5"):
        FusedResidualMLP(16, 8, num_groups=5)
    with pytest.raises(ValueError, match="num_groups: expected a positive int, got 0"):
        GroupedResidualMLP(16, 8, num_groups=0)


def test_init_matches_nn_linear_bounds():
    grouped = GroupedResidualMLP(64, 16, num_groups=4)
    assert grouped.down_weight.abs().max() <= 64**-0.5 and grouped.up_weight.abs().max() <= 16**-0.5
    assert grouped.down_weight[0].std() > 0.5 * 64**-0.5 / 3**0.5  # uniform, not constant
    assert torch.equal(grouped.norm_weight, torch.ones(4, 64)) and not grouped.norm_bias.any()


def test_state_dicts_load_both_ways():
    loop = _loop(4, 12, 6)
    assert set(loop.state_dict()) == {f"{i}.{k}" for i in range(4) for k in
                                      ("down.weight", "down.bias", "up.weight", "up.bias", "norm.weight", "norm.bias")}
    grouped = GroupedResidualMLP(12, 6, num_groups=4, backend="eager")
    grouped.load_state_dict(loop.state_dict())
    for i, mlp in enumerate(loop):
        assert torch.equal(grouped.down_weight[i], mlp.down.weight)
        assert torch.equal(grouped.norm_bias[i], mlp.norm.bias)
    back = ResidualMLPLoop(ResidualMLP(12, 6) for _ in range(4))
    back.load_state_dict(_randomize(grouped).state_dict())
    for i, mlp in enumerate(back):
        assert torch.equal(mlp.up.weight, grouped.up_weight[i])
        assert torch.equal(mlp.norm.weight, grouped.norm_weight[i])
    plain = nn.ModuleList(ResidualMLP(12, 6) for _ in range(4))
    plain.load_state_dict(back.state_dict())  # the loop's keys are a plain ModuleList's
    GroupedResidualMLP(12, 6, num_groups=4).load_state_dict(plain.state_dict())


def test_state_dict_with_a_missing_group_is_refused():
    sd = _loop(3, 8, 4).state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("2.down.")}
    with pytest.raises(RuntimeError, match="Missing key.*down_weight"):
        GroupedResidualMLP(8, 4, num_groups=3).load_state_dict(partial)


def test_encoder_state_dict_loads_per_token_keys():
    enc = ResidualPromptEncoder(3, 8, 4, separate=True, backend="eager")
    loop = _loop(3, 8, 4)
    sd = {"prompt": torch.randn(3, 8), **{f"mlp.{k}": v for k, v in loop.state_dict().items()}}
    enc.load_state_dict(sd)
    torch.testing.assert_close(enc(), loop(sd["prompt"]))


@pytest.mark.parametrize("official", [False, True], ids=["ResidualMLP", "Sequential"])
def test_from_eager_and_to_eager(official):
    loop = _loop(3, 12, 6)
    if official:
        modules = [nn.Sequential(m.down, nn.ReLU(), m.up, m.norm) for m in loop]
    else:
        modules = list(loop)
    grouped = FusedResidualMLP.from_eager(modules, backend="eager")
    assert type(grouped) is GroupedResidualMLP
    x = torch.randn(3, 12)
    torch.testing.assert_close(grouped(x), loop(x))
    again = grouped.to_eager()
    assert type(again) is ResidualMLPLoop and all(type(m) is ResidualMLP for m in again)
    assert again[1].down.weight is not grouped.down_weight  # copies: stacking cannot share
    assert torch.equal(again(x), loop(x))


@pytest.mark.parametrize("residual", [True, False])
def test_from_official_resmlps_keeps_the_residual_flag(official_resmlp, residual):
    officials = [official_resmlp(12, 6, residual=residual) for _ in range(3)]
    grouped = GroupedResidualMLP.from_eager(officials, backend="native")
    assert grouped.residual is residual
    x = torch.randn(3, 12)
    expected = torch.stack([mlp(x[i]) for i, mlp in enumerate(officials)])
    _warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = grouped(x)
    assert [str(w.message) for w in caught] == (
        [] if residual else ["GroupedResidualMLP runs the eager path for residual=False"]
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_from_eager_rejects_mixed_or_bad_lists():
    with pytest.raises(ValueError, match=r"modules\[1\]: expected d_model=8, bottleneck=4"):
        GroupedResidualMLP.from_eager([ResidualMLP(8, 4), ResidualMLP(8, 5)])
    with pytest.raises(ValueError, match=r"modules\[1\]: .*'activation': 'tanh'"):
        GroupedResidualMLP.from_eager([ResidualMLP(8, 4), ResidualMLP(8, 4, activation="tanh")])
    with pytest.raises(TypeError, match=r"modules\[0\]: expected a ResidualMLP, .* got Linear"):
        GroupedResidualMLP.from_eager([nn.Linear(4, 4)])
    with pytest.raises(ValueError, match="modules: expected at least one ResidualMLP"):
        GroupedResidualMLP.from_eager([])
    with pytest.raises(TypeError, match="modules: expected a list or nn.ModuleList"):
        GroupedResidualMLP.from_eager(ResidualMLP(8, 4))


def test_bad_input_shape_names_x():
    grouped = GroupedResidualMLP(8, 4, num_groups=3, backend="eager")
    with pytest.raises(ValueError, match=r"x: expected shape \(3, 8\) \(one row per group\), got \(2, 8\)"):
        grouped(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"x: expected shape \(3, 8\)"):
        grouped.to_eager()(torch.randn(3, 3, 8))


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"activation": "tanh"}, "activation='tanh'"),
        ({"layer_norm": False}, "layer_norm=False"),
        ({"residual": False}, "residual=False"),
        ({"dropout": 0.3}, "dropout=0.3 in training mode"),
    ],
)
def test_unfused_configs_run_the_eager_loop_with_one_warning(kwargs, reason):
    _warned.clear()
    loop = _loop(3, 8, 4, **kwargs)
    grouped = GroupedResidualMLP.from_eager(loop)
    x = torch.randn(3, 8)
    with pytest.warns(UserWarning, match=f"GroupedResidualMLP runs the eager path for {reason}"):
        torch.manual_seed(1)
        got = grouped(x)
    torch.manual_seed(1)
    assert torch.equal(got, loop(x))  # the same ops in the same order: the same numbers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grouped(x)


def test_encoder_separate_forward_and_projected_prompt():
    enc = ResidualPromptEncoder(10, 16, 8, separate=True, dropout=0.5, backend="eager")
    assert isinstance(enc.mlp, GroupedResidualMLP) and enc.mlp.num_groups == 10 and enc.separate
    _randomize(enc.mlp)
    projected = enc.projected_prompt()
    assert enc.training and not projected.requires_grad
    expected = enc.mlp.to_eager().eval()(enc.prompt).detach()
    torch.testing.assert_close(projected, expected)
    _warned.clear()
    with pytest.warns(UserWarning, match="dropout=0.5 in training mode"):
        out = enc()
    assert out.shape == (10, 16) and out.requires_grad
    assert set(enc.state_dict()) == {"prompt"} | {f"mlp.{k}" for k in KEYS}
