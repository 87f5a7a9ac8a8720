"""Test setup. Without a GPU, Triton kernels run on CPU tensors through the interpreter; the
variable must be set before triton is imported anywhere. torch.compile's on-disk caches are
the session's own: their keys do not cover a custom op's fake implementation, so graphs cached
by an older checkout would be reused with stale output layouts."""

import atexit
import os
import shutil
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rpt-fast-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import pytest  # noqa: E402
from torch import nn  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def poisoned():
    """Fresh ATen allocations (outputs and scratch) are NaN-filled, so an output element a
    kernel skips fails the comparison instead of passing on leftover memory."""
    from rpt_fast.selfcheck import poisoned_allocations  # after TRITON_INTERPRET is set

    with poisoned_allocations():
        yield


@pytest.fixture
def nan_poisoning():
    """The context manager of ``poisoned``, for tests that poison only the op under test (the
    float64 reference's cuBLAS calls refuse deterministic mode on CUDA)."""
    from rpt_fast.selfcheck import poisoned_allocations

    return poisoned_allocations


class OfficialStyleResMLP(nn.Module):
    """Stand-in with the attributes of the official ResMLP (arazd/ResidualPrompts, module_type
    'MLP1') that ``from_eager`` reads: ``module``, the MLP's Sequential (Linear, activation,
    Linear, [Dropout], [LayerNorm]), and the ``residual`` flag, which adds the input or not."""

    def __init__(self, d, m, *, dropout=0.0, layer_norm=True, residual=True, eps=1e-5):
        super().__init__()
        layers = [nn.Linear(d, m), nn.ReLU(), nn.Linear(m, d)]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        layers += [nn.LayerNorm(d, eps=eps)] if layer_norm else []
        self.module = nn.Sequential(*layers)
        self.residual = residual
        self.module_type = "MLP1"
        with torch.no_grad():  # fresh random values, never the zero biases of init
            for p in self.parameters():
                p.add_(0.3 * torch.randn_like(p))

    def forward(self, x):
        return self.module(x) + x if self.residual else self.module(x)


@pytest.fixture
def official_resmlp():
    """The class :class:`OfficialStyleResMLP`."""
    return OfficialStyleResMLP


def pytest_collection_modifyitems(config, items):
    """The GPU tier (``@pytest.mark.gpu``) runs only where CUDA is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
