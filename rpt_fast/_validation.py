"""Input checks shared by the public ops: every error names the argument, the expected and
the actual shape, dtype or device, so a bad call never reaches a kernel."""

from __future__ import annotations

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _describe(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _shape_error(name: str, t: torch.Tensor, expected: tuple) -> ValueError:
    hint = ""
    if t.numel() == 0 and t.dim() == 1:
        hint = (
            "; this looks like a DeepSpeed ZeRO-3 parameter that was released and not gathered: "
            "call the op inside the forward of the module that owns the parameter"
        )
    return ValueError(f"{name}: expected shape {expected}, got {tuple(t.shape)}{hint}")


def check_tensor(name: str, t, expected_shape: tuple[int, ...], x: torch.Tensor) -> None:
    """``t`` must be a tensor of ``expected_shape`` (Python ints) with x's dtype and device.

    Runs on every call of the public ops, six times, so it compares as directly as it can
    (host time is what a prompt-sized op costs when launched eagerly)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.shape != expected_shape:
        raise _shape_error(name, t, expected_shape)
    if t.dtype != x.dtype:
        raise TypeError(
            f"{name}: expected dtype {x.dtype} (the dtype of x), got {t.dtype}; "
            "all inputs must share one dtype (use torch.autocast for mixed precision)"
        )
    if t.device != x.device:
        raise ValueError(f"{name}: expected device {x.device} (the device of x), got {t.device}")


def check_x(x, *, ndim: int | None = None) -> None:
    """``x`` must be a floating tensor of a supported dtype with at least one dimension."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"x: expected dtype in ({names}), got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"x: expected a {ndim}-D tensor, got {x.dim()}-D with {_describe(x)}")
    if x.dim() < 1:
        raise ValueError("x: expected at least 1 dimension (..., d), got a 0-D tensor")
    if x.shape[-1] < 1:
        raise ValueError(f"x: expected a last dimension d >= 1, got shape {tuple(x.shape)}")


def check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps: expected a float, got {type(eps).__name__}")
    if not eps > 0:
        raise ValueError(f"eps: expected a positive float, got {eps}")
    return float(eps)


def _bottleneck_of(name: str, w, d: int, lead: tuple) -> int:
    """Read the bottleneck m from a weight that must be ``lead + (m, d)``."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(w).__name__}")
    want = len(lead) + 2
    if w.dim() != want or tuple(w.shape[: len(lead)]) != lead or w.shape[-1] != d or w.shape[-2] < 1:
        raise _shape_error(name, w, lead + ("m >= 1", d))
    return int(w.shape[-2])


def _check_width(x: torch.Tensor, w1, others: tuple) -> None:
    """Raises the error naming ``x`` when its width is the odd one out: w1 and every other
    parameter carrying d (w2, b2, ln_weight, ln_bias) agree on a d that is not x's (the error
    path of :func:`_bottleneck_of`, which would blame w1)."""
    if not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in (w1, *others)) or others[0].dim() < 2:
        return
    d = w1.shape[-1]
    if d != x.shape[-1] and others[0].shape[-2] == d and all(t.shape[-1] == d for t in others[1:]):
        raise ValueError(f"x: expected a last dimension d = {d} (the width of w1, w2, b2, ln_weight and ln_bias), "
                         f"got {x.shape[-1]} (shape {tuple(x.shape)})")


def check_residual_mlp_inputs(x, w1, b1, w2, b2, ln_weight, ln_bias) -> tuple[int, int]:
    """Checks the shared op's inputs; returns (d, m)."""
    check_x(x)
    d = int(x.shape[-1])
    try:
        m = _bottleneck_of("w1", w1, d, ())
    except ValueError:
        _check_width(x, w1, (w2, b2, ln_weight, ln_bias))
        raise
    check_tensor("w1", w1, (m, d), x)
    check_tensor("b1", b1, (m,), x)
    check_tensor("w2", w2, (d, m), x)
    check_tensor("b2", b2, (d,), x)
    check_tensor("ln_weight", ln_weight, (d,), x)
    check_tensor("ln_bias", ln_bias, (d,), x)
    return d, m


def check_grouped_inputs(x, w1, b1, w2, b2, ln_weight, ln_bias) -> tuple[int, int, int]:
    """Checks the grouped ("separate") op's inputs; returns (n, d, m)."""
    check_x(x, ndim=2)
    n, d = (int(s) for s in x.shape)
    try:
        m = _bottleneck_of("w1", w1, d, (n,))
    except ValueError:
        _check_width(x, w1, (w2, b2, ln_weight, ln_bias))
        raise
    check_tensor("w1", w1, (n, m, d), x)
    check_tensor("b1", b1, (n, m), x)
    check_tensor("w2", w2, (n, d, m), x)
    check_tensor("b2", b2, (n, d), x)
    check_tensor("ln_weight", ln_weight, (n, d), x)
    check_tensor("ln_bias", ln_bias, (n, d), x)
    return n, d, m
