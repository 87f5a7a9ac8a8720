"""A NaN in h (the ReLU's output) passes its gradient through on the Triton and native
backends, as torch's ReLU backward does (``threshold_backward``: zero where h <= 0, so not
where h is NaN): each backend's NaN pattern in y and in all seven gradients is the float64
reference's. The shared op runs at 3 rows (Triton's split-K kernels) and at 150 (more than
128: its tiled kernels, whose B2 epilogue masks with h)."""

import pytest
import torch

import rpt_fast
from rpt_fast import BackendUnavailableError
from rpt_fast.ops.reference import grouped_residual_mlp_reference, residual_mlp_reference


def _inputs(grouped, n):
    d, m = 24, 6
    lead = (n,) if grouped else ()
    tensors = [torch.randn(n, d), torch.randn(*lead, m, d) / d**0.5,
               0.1 * torch.randn(*lead, m), torch.randn(*lead, d, m) / m**0.5,
               0.1 * torch.randn(*lead, d), 1 + 0.1 * torch.randn(*lead, d),
               0.1 * torch.randn(*lead, d)]
    # Unit 2 of h is NaN (in group 1): torch gives NaN in db1 and dw1 there, a kernel that
    # zeroes the gradient where h is not > 0 gives 0.
    tensors[1][(1, 2, 5) if grouped else (2, 5)] = float("nan")
    return tensors


@pytest.mark.parametrize("grouped, rows", [(False, 3), (False, 150), (True, 3)],
                         ids=["shared", "shared-150-rows", "grouped"])
@pytest.mark.parametrize("backend", ["triton", "native"])
def test_nan_in_h_passes_its_gradient_like_torch(backend, grouped, rows):
    op = rpt_fast.grouped_residual_mlp if grouped else rpt_fast.residual_mlp
    reference = grouped_residual_mlp_reference if grouped else residual_mlp_reference
    inputs = [t.requires_grad_() for t in _inputs(grouped, rows)]
    dy = torch.randn(inputs[0].shape)
    try:
        y = op(*inputs, backend=backend)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    got = (y, *torch.autograd.grad(y, inputs, dy))
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref_y = reference(*ref_inputs)
    expected = (ref_y, *torch.autograd.grad(ref_y, ref_inputs, dy.double()))
    for name, a, b in zip(("y", "dx", "dw1", "db1", "dw2", "db2", "dln_weight", "dln_bias"),
                          got, expected):
        assert torch.equal(torch.isnan(a), torch.isnan(b)), name
