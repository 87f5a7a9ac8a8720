"""``nn.Module`` front ends: the eager residual MLP, its fused drop-in, and the prompt encoder."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .functional import residual_mlp
from .ops import BACKENDS

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


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
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        for name, value in (("d_model", d_model), ("bottleneck", bottleneck)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
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
    """

    def __init__(self, d_model: int, bottleneck: int, *, backend: str = "auto", **kwargs):
        super().__init__(d_model, bottleneck, **kwargs)
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.backend = backend

    def _unfused_reason(self) -> str | None:
        if self.activation != "relu":
            return f"activation={self.activation!r} (the kernels fuse relu only)"
        if self.norm is None:
            return "layer_norm=False"
        if not self.residual:
            return "residual=False"
        if self.training and self.dropout.p > 0:
            return f"dropout={self.dropout.p} in training mode"
        return None

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
    def from_eager(cls, module: nn.Module, *, backend: str = "auto") -> "FusedResidualMLP":
        """Wraps a :class:`ResidualMLP`, or the official layout ``nn.Sequential(Linear, ReLU,
        Linear, [Dropout], [LayerNorm])`` whose output gets the residual, sharing its Parameters.
        """
        if isinstance(module, nn.Sequential):
            module = _residual_mlp_from_sequential(module)
        if not isinstance(module, ResidualMLP):
            raise TypeError(
                f"module: expected a ResidualMLP or an nn.Sequential(Linear, ReLU, Linear, "
                f"[Dropout], [LayerNorm]), got {type(module).__name__}"
            )
        d_model, bottleneck = module.down.in_features, module.down.out_features
        fused = cls(d_model, bottleneck, backend=backend, device="meta", **module._config())
        return fused._adopt(module)

    def to_eager(self) -> ResidualMLP:
        """A :class:`ResidualMLP` sharing this module's Parameters."""
        d_model, bottleneck = self.down.in_features, self.down.out_features
        return ResidualMLP(d_model, bottleneck, device="meta", **self._config())._adopt(self)


def _residual_mlp_from_sequential(seq: nn.Sequential) -> ResidualMLP:
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
            f"module: expected nn.Sequential(Linear, ReLU, Linear, [Dropout], [LayerNorm]), "
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


class ResidualPromptEncoder(nn.Module):
    """Owns the soft prompt P (num_tokens, d_model) and its residual MLP.

    ``forward()`` returns the reparameterized prompt P' = MLP(P) + P; ``projected_prompt()``
    returns P' detached and without dropout, for inference once the MLP is dropped.
    """

    def __init__(
        self,
        num_tokens: int,
        d_model: int,
        bottleneck: int = 800,
        *,
        dropout: float = 0.0,
        init: torch.Tensor | None = None,
        backend: str = "auto",
        eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"num_tokens: expected a positive int, got {num_tokens!r}")
        self.prompt = nn.Parameter(torch.empty(num_tokens, d_model, device=device, dtype=dtype))
        self.mlp = FusedResidualMLP(
            d_model, bottleneck, dropout=dropout, eps=eps, backend=backend, device=device, dtype=dtype
        )
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

    @property
    def num_tokens(self) -> int:
        return self.prompt.shape[0]

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
