"""``nn.Module`` front ends: the eager residual MLP, its fused drop-in, the grouped ("separate",
one MLP per prompt token) variant with its eager loop, and the prompt encoder."""

from __future__ import annotations

import math
import warnings
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .functional import grouped_residual_mlp, residual_mlp
from .ops import BACKENDS

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_config(d_model, bottleneck, dropout, activation) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {tuple(ACTIVATIONS)}, got {activation!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
    _check_positive_int("d_model", d_model)
    _check_positive_int("bottleneck", bottleneck)


def _check_backend(backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def _unfused_reason(activation, has_norm, residual, training, dropout_p) -> str | None:
    """Why the fused kernels cannot compute a configuration (None: they can)."""
    if activation != "relu":
        return f"activation={activation!r} (the kernels fuse relu only)"
    if not has_norm:
        return "layer_norm=False"
    if not residual:
        return "residual=False"
    if training and dropout_p > 0:
        return f"dropout={dropout_p} in training mode"
    return None


class ResidualMLP(nn.Module):
    """The official residual reparameterization, eager:
    ``norm(dropout(up(act(down(x))))) + x``.

    Submodules ``down``, ``up`` (``nn.Linear``) and ``norm`` (``nn.LayerNorm``, absent when
    ``layer_norm=False``) give the state_dict keys shared with :class:`FusedResidualMLP`.
    """

    def __init__(
        self,
        d_model: int,
        bottleneck: int,
        *,
        dropout: float = 0.0,
        layer_norm: bool = True,
        residual: bool = True,
        activation: str = "relu",
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_config(d_model, bottleneck, dropout, activation)
        factory = {"device": device, "dtype": dtype}
        self.down = nn.Linear(d_model, bottleneck, **factory)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, d_model, **factory)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=eps, **factory) if layer_norm else None
        self.residual = residual
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.up(self.act(self.down(x))))
        if self.norm is not None:
            y = self.norm(y)
        return y + x if self.residual else y

    def extra_repr(self) -> str:
        return f"residual={self.residual}"

    def _config(self) -> dict:
        return {
            "dropout": self.dropout.p,
            "layer_norm": self.norm is not None,
            "residual": self.residual,
            "activation": self.activation,
            "eps": self.norm.eps if self.norm is not None else 1e-5,
        }

    def _adopt(self, other: "ResidualMLP") -> "ResidualMLP":
        """Takes over ``other``'s submodules, so both share the same Parameter objects."""
        self.down, self.act, self.up = other.down, other.act, other.up
        self.dropout, self.norm = other.dropout, other.norm
        self.train(other.training)
        return self


class FusedResidualMLP(ResidualMLP):
    """Drop-in for :class:`ResidualMLP` whose forward and backward run fused kernels.

    Same arguments (plus ``backend``) and the same state_dict keys. Configurations the kernels
    do not cover (another activation, no LayerNorm, no residual, dropout while training) run
    the eager path, after a one-time warning: the numbers never differ from ResidualMLP's.

    ``separate=True, num_groups=n`` builds a :class:`GroupedResidualMLP` instead (one MLP per
    row, the paper's separate MLPs), so one constructor serves both variants.
    """

    def __new__(cls, *args, separate: bool = False, **kwargs):
        if separate:
            return GroupedResidualMLP(*args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        d_model: int,
        bottleneck: int,
        *,
        backend: str = "auto",
        separate: bool = False,
        num_groups: int | None = None,
        **kwargs,
    ):
        # ``separate`` was consumed by __new__ (True never gets here).
        if num_groups is not None:
            raise ValueError(
                f"num_groups: only used with separate=True (one MLP per row), got {num_groups!r}"
            )
        super().__init__(d_model, bottleneck, **kwargs)
        _check_backend(backend)
        self.backend = backend

    def _unfused_reason(self) -> str | None:
        return _unfused_reason(
            self.activation, self.norm is not None, self.residual, self.training, self.dropout.p
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reason = self._unfused_reason()
        if reason is not None:
            _warn_once(f"FusedResidualMLP runs the eager path for {reason}")
            return super().forward(x)
        return residual_mlp(
            x,
            self.down.weight,
            self.down.bias,
            self.up.weight,
            self.up.bias,
            self.norm.weight,
            self.norm.bias,
            self.norm.eps,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"residual={self.residual}, backend={self.backend!r}"

    @classmethod
    def from_eager(cls, module, *, backend: str = "auto") -> "FusedResidualMLP | GroupedResidualMLP":
        """Wraps a :class:`ResidualMLP`, the official ``ResMLP`` (its ``module`` Sequential and
        its ``residual`` flag; ``residual=False`` runs the eager path after a one-time warning),
        or the official layout ``nn.Sequential(Linear, ReLU, Linear, [Dropout], [LayerNorm])``
        whose output gets the residual, sharing its Parameters.

        A list or ``nn.ModuleList`` of them (one per row) becomes a :class:`GroupedResidualMLP`
        (see :meth:`GroupedResidualMLP.from_eager`: stacked copies, not shared Parameters).
        """
        if isinstance(module, (nn.ModuleList, list, tuple)):
            return GroupedResidualMLP.from_eager(module, backend=backend)
        module = _as_residual_mlp(module, "module")
        d_model, bottleneck = module.down.in_features, module.down.out_features
        fused = cls(d_model, bottleneck, backend=backend, device="meta", **module._config())
        return fused._adopt(module)

    def to_eager(self) -> ResidualMLP:
        """A :class:`ResidualMLP` sharing this module's Parameters."""
        d_model, bottleneck = self.down.in_features, self.down.out_features
        return ResidualMLP(d_model, bottleneck, device="meta", **self._config())._adopt(self)


def _residual_mlp_from_sequential(seq: nn.Sequential, name: str, residual: bool = True) -> ResidualMLP:
    """A ResidualMLP holding the layers of the official layout ``seq``; ``residual``: whether
    the input is added to its output (the official ResMLP's flag)."""
    layers = list(seq)
    kinds = [type(layer) for layer in layers]
    act_names = {cls: name for name, cls in ACTIVATIONS.items()}
    ok = (
        len(layers) in (3, 4, 5)
        and kinds[0] is nn.Linear
        and kinds[1] in act_names
        and kinds[2] is nn.Linear
        and all(k in (nn.Dropout, nn.LayerNorm) for k in kinds[3:])
        and kinds[3:] in ([], [nn.Dropout], [nn.LayerNorm], [nn.Dropout, nn.LayerNorm])
    )
    if not ok:
        names = ", ".join(k.__name__ for k in kinds)
        raise TypeError(
            f"{name}: expected nn.Sequential(Linear, ReLU, Linear, [Dropout], [LayerNorm]), "
            f"got nn.Sequential({names})"
        )
    down, act, up = layers[:3]
    dropout = next((layer for layer in layers[3:] if isinstance(layer, nn.Dropout)), None)
    norm = next((layer for layer in layers[3:] if isinstance(layer, nn.LayerNorm)), None)
    eager = ResidualMLP(
        down.in_features,
        down.out_features,
        dropout=dropout.p if dropout is not None else 0.0,
        layer_norm=norm is not None,
        residual=residual,
        activation=act_names[kinds[1]],
        eps=norm.eps if norm is not None else 1e-5,
        device="meta",
    )
    eager.down, eager.act, eager.up = down, act, up
    if dropout is not None:
        eager.dropout = dropout
    eager.norm = norm
    eager.train(seq.training)
    return eager


# Stacked parameter name of GroupedResidualMLP -> (submodule, parameter) of each ResidualMLP.
_GROUP_KEYS = {
    "down_weight": ("down", "weight"),
    "down_bias": ("down", "bias"),
    "up_weight": ("up", "weight"),
    "up_bias": ("up", "bias"),
    "norm_weight": ("norm", "weight"),
    "norm_bias": ("norm", "bias"),
}


def _stack_per_group_keys(state_dict: dict, prefix: str, num_groups: int) -> None:
    """Rewrites ``{prefix}{i}.down.weight``-style keys (a ModuleList of ResidualMLPs) into the
    stacked ``{prefix}down_weight`` keys, when every group of a parameter is present."""
    for stacked, (sub, leaf) in _GROUP_KEYS.items():
        keys = [f"{prefix}{i}.{sub}.{leaf}" for i in range(num_groups)]
        if f"{prefix}{stacked}" in state_dict or not all(k in state_dict for k in keys):
            continue
        state_dict[f"{prefix}{stacked}"] = torch.stack([state_dict.pop(k) for k in keys])


def _split_stacked_keys(state_dict: dict, prefix: str, num_groups: int) -> None:
    """The inverse of :func:`_stack_per_group_keys`, for loading into the eager loop."""
    for stacked, (sub, leaf) in _GROUP_KEYS.items():
        value = state_dict.get(f"{prefix}{stacked}")
        if value is None or value.dim() < 1 or value.shape[0] != num_groups:
            continue
        del state_dict[f"{prefix}{stacked}"]
        for i in range(num_groups):
            state_dict[f"{prefix}{i}.{sub}.{leaf}"] = value[i]


class ResidualMLPLoop(nn.ModuleList):
    """The eager reference of the grouped ("separate") variant: row ``i`` goes through
    ``self[i]``, a :class:`ResidualMLP`, one after another (the official ``separate_mlps``).

    A plain ``nn.ModuleList`` of ResidualMLPs with a forward; its state_dict has the per-group
    keys (``0.down.weight``, ...) and it also loads a :class:`GroupedResidualMLP` state_dict.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rows(x, len(self), self[0].down.in_features)
        return torch.stack([mlp(x[i]) for i, mlp in enumerate(self)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _split_stacked_keys(state_dict, prefix, len(self))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _check_rows(x, num_groups: int, d_model: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != (num_groups, d_model):
        raise ValueError(
            f"x: expected shape ({num_groups}, {d_model}) (one row per group), got {tuple(x.shape)}"
        )


class GroupedResidualMLP(nn.Module):
    """One residual MLP per row of x (num_groups, d_model), fused: the paper's separate MLPs.

    Row ``i`` computes ``LayerNorm_i(up_i(ReLU(down_i(x_i)))) + x_i``. The Parameters are
    stacked and owned by this module, so the fused call in its forward receives them gathered
    under DeepSpeed ZeRO-3: ``down_weight`` (n, m, d), ``down_bias`` (n, m), ``up_weight``
    (n, d, m), ``up_bias`` (n, d), ``norm_weight``/``norm_bias`` (n, d) (absent with
    ``layer_norm=False``). Its state_dict also loads from a :class:`ResidualMLPLoop` (or any
    ``nn.ModuleList`` of ResidualMLPs) and vice versa. Configurations the kernels do not cover
    run the eager loop after a one-time warning, with the numbers of :class:`ResidualMLPLoop`.
    """

    def __init__(
        self,
        d_model: int,
        bottleneck: int,
        *,
        num_groups: int | None = None,
        dropout: float = 0.0,
        layer_norm: bool = True,
        residual: bool = True,
        activation: str = "relu",
        eps: float = 1e-5,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_groups is None:
            raise ValueError("num_groups: required with separate=True (one MLP per row), got None")
        _check_positive_int("num_groups", num_groups)
        _check_config(d_model, bottleneck, dropout, activation)
        _check_backend(backend)
        n, d, m = num_groups, d_model, bottleneck
        factory = {"device": device, "dtype": dtype}
        self.down_weight = nn.Parameter(torch.empty(n, m, d, **factory))
        self.down_bias = nn.Parameter(torch.empty(n, m, **factory))
        self.up_weight = nn.Parameter(torch.empty(n, d, m, **factory))
        self.up_bias = nn.Parameter(torch.empty(n, d, **factory))
        if layer_norm:
            self.norm_weight = nn.Parameter(torch.empty(n, d, **factory))
            self.norm_bias = nn.Parameter(torch.empty(n, d, **factory))
        else:
            self.register_parameter("norm_weight", None)
            self.register_parameter("norm_bias", None)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.num_groups, self.d_model, self.bottleneck = n, d, m
        self.layer_norm, self.residual, self.activation = layer_norm, residual, activation
        self.eps = eps
        self.backend = backend
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Each group initialized as ``nn.Linear`` / ``nn.LayerNorm`` initialize themselves."""
        for weight, bias in ((self.down_weight, self.down_bias), (self.up_weight, self.up_bias)):
            bound = 1.0 / math.sqrt(weight.shape[-1])
            weight.uniform_(-bound, bound)
            bias.uniform_(-bound, bound)
        if self.layer_norm:
            self.norm_weight.fill_(1.0)
            self.norm_bias.zero_()

    def _unfused_reason(self) -> str | None:
        return _unfused_reason(
            self.activation, self.layer_norm, self.residual, self.training, self.dropout.p
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_rows(x, self.num_groups, self.d_model)
        reason = self._unfused_reason()
        if reason is not None:
            _warn_once(f"GroupedResidualMLP runs the eager path for {reason}")
            return self._eager_loop(x)
        return grouped_residual_mlp(
            x,
            self.down_weight,
            self.down_bias,
            self.up_weight,
            self.up_bias,
            self.norm_weight,
            self.norm_bias,
            self.eps,
            backend=self.backend,
        )

    def _eager_loop(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly the ops of :meth:`ResidualMLP.forward` per row, in ResidualMLPLoop's order."""
        rows = []
        for i in range(self.num_groups):
            h = self.act(F.linear(x[i], self.down_weight[i], self.down_bias[i]))
            y = self.dropout(F.linear(h, self.up_weight[i], self.up_bias[i]))
            if self.layer_norm:
                y = F.layer_norm(y, (self.d_model,), self.norm_weight[i], self.norm_bias[i], self.eps)
            rows.append(y + x[i] if self.residual else y)
        return torch.stack(rows)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _stack_per_group_keys(state_dict, prefix, self.num_groups)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"num_groups={self.num_groups}, d_model={self.d_model}, bottleneck={self.bottleneck}, "
            f"residual={self.residual}, backend={self.backend!r}"
        )

    def _config(self) -> dict:
        return {
            "dropout": self.dropout.p,
            "layer_norm": self.layer_norm,
            "residual": self.residual,
            "activation": self.activation,
            "eps": self.eps,
        }

    @classmethod
    def from_eager(cls, modules: Iterable[nn.Module], *, backend: str = "auto") -> "GroupedResidualMLP":
        """Stacks a list / ``nn.ModuleList`` of :class:`ResidualMLP` (or official
        ``nn.Sequential`` layouts), one per row, into a new module on their device and dtype.

        The Parameters are copies (stacking cannot share storage); requires_grad and the
        training mode follow the first module.
        """
        if not isinstance(modules, (nn.ModuleList, list, tuple)):
            raise TypeError(
                f"modules: expected a list or nn.ModuleList of ResidualMLP, got {type(modules).__name__}"
            )
        mlps = [_as_residual_mlp(module, f"modules[{i}]") for i, module in enumerate(modules)]
        if not mlps:
            raise ValueError("modules: expected at least one ResidualMLP, got an empty list")
        first = mlps[0]
        d_model, bottleneck, config = first.down.in_features, first.down.out_features, first._config()
        for i, mlp in enumerate(mlps[1:], start=1):
            sizes = (mlp.down.in_features, mlp.down.out_features)
            if sizes != (d_model, bottleneck) or mlp._config() != config:
                raise ValueError(
                    f"modules[{i}]: expected d_model={d_model}, bottleneck={bottleneck} and "
                    f"{config} like modules[0], got d_model={sizes[0]}, bottleneck={sizes[1]} "
                    f"and {mlp._config()}"
                )
        grouped = cls(
            d_model, bottleneck, num_groups=len(mlps), backend=backend, device="meta", **config
        )
        for stacked, (sub, leaf) in _GROUP_KEYS.items():
            if getattr(first, sub) is None:
                continue
            source = getattr(getattr(first, sub), leaf)
            with torch.no_grad():
                value = torch.stack([getattr(getattr(m, sub), leaf).detach() for m in mlps])
            setattr(grouped, stacked, nn.Parameter(value, requires_grad=source.requires_grad))
        grouped.act = first.act
        return grouped.train(modules.training if isinstance(modules, nn.Module) else first.training)

    def to_eager(self) -> ResidualMLPLoop:
        """A :class:`ResidualMLPLoop` of ResidualMLPs holding copies of each group's values."""
        loop = ResidualMLPLoop(
            ResidualMLP(self.d_model, self.bottleneck, device="meta", **self._config())
            for _ in range(self.num_groups)
        )
        for i, mlp in enumerate(loop):
            for stacked, (sub, leaf) in _GROUP_KEYS.items():
                param = getattr(self, stacked)
                if param is None:
                    continue
                value = param.detach()[i].clone()
                setattr(getattr(mlp, sub), leaf, nn.Parameter(value, requires_grad=param.requires_grad))
        return loop.train(self.training)


def _is_official_resmlp(module) -> bool:
    """Duck-typed: the official ``ResMLP`` is an ``nn.Module`` whose ``module`` is the MLP's
    ``nn.Sequential`` and whose ``residual`` flag says whether the input is added."""
    return (
        isinstance(module, nn.Module)
        and not isinstance(module, (ResidualMLP, nn.Sequential))
        and isinstance(getattr(module, "module", None), nn.Sequential)
        and hasattr(module, "residual")
    )


def _as_residual_mlp(module, name: str) -> ResidualMLP:
    if _is_official_resmlp(module):
        eager = _residual_mlp_from_sequential(module.module, f"{name}.module", bool(module.residual))
        module = eager.train(module.training)
    elif isinstance(module, nn.Sequential):
        module = _residual_mlp_from_sequential(module, name)
    if not isinstance(module, ResidualMLP):
        raise TypeError(
            f"{name}: expected a ResidualMLP, the official ResMLP (module_type='MLP1') or an "
            f"nn.Sequential(Linear, ReLU, Linear, [Dropout], [LayerNorm]), got {type(module).__name__}"
        )
    return module


class ResidualPromptEncoder(nn.Module):
    """Owns the soft prompt P (num_tokens, d_model) and its residual MLP.

    ``forward()`` returns the reparameterized prompt P' = MLP(P) + P; ``projected_prompt()``
    returns P' detached and without dropout, for inference once the MLP is dropped.
    ``separate=True`` gives every prompt token its own MLP (a :class:`GroupedResidualMLP`).
    """

    def __init__(
        self,
        num_tokens: int,
        d_model: int,
        bottleneck: int = 800,
        *,
        separate: bool = False,
        dropout: float = 0.0,
        init: torch.Tensor | None = None,
        backend: str = "auto",
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_positive_int("num_tokens", num_tokens)
        self.prompt = nn.Parameter(torch.empty(num_tokens, d_model, device=device, dtype=dtype))
        # Kept as an int: under ZeRO-3 the released prompt has shape (0,).
        self.num_tokens = num_tokens
        kwargs = {"dropout": dropout, "eps": eps, "backend": backend, "device": device, "dtype": dtype}
        if separate:
            self.mlp = GroupedResidualMLP(d_model, bottleneck, num_groups=num_tokens, **kwargs)
        else:
            self.mlp = FusedResidualMLP(d_model, bottleneck, **kwargs)
        self.separate = separate
        self.reset_prompt(init)

    @torch.no_grad()
    def reset_prompt(self, init: torch.Tensor | None = None) -> None:
        """Sets P to ``init`` (num_tokens, d_model), or to uniform(-0.5, 0.5) when None."""
        if init is None:
            self.prompt.uniform_(-0.5, 0.5)
            return
        if not isinstance(init, torch.Tensor) or tuple(init.shape) != tuple(self.prompt.shape):
            got = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
            raise ValueError(f"init: expected a tensor of shape {tuple(self.prompt.shape)}, got {got}")
        self.prompt.copy_(init)

    def forward(self) -> torch.Tensor:
        return self.mlp(self.prompt)

    @torch.no_grad()
    def projected_prompt(self) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return self.forward().detach()
        finally:
            self.train(was_training)
