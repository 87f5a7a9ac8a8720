"""rpt-fast: fused kernels and scalable training for Residual Prompt Tuning."""

from ._backends import BackendUnavailableError
from .functional import grouped_residual_mlp, residual_mlp
from .modules import (
    FusedResidualMLP,
    GroupedResidualMLP,
    ResidualMLP,
    ResidualMLPLoop,
    ResidualPromptEncoder,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "FusedResidualMLP",
    "GroupedResidualMLP",
    "ResidualMLP",
    "ResidualMLPLoop",
    "ResidualPromptEncoder",
    "ResidualPromptModel",
    "grouped_residual_mlp",
    "residual_mlp",
]


def __getattr__(name):
    # The model wrapper imports transformers: load it only when asked for.
    if name == "ResidualPromptModel":
        from .prompt import ResidualPromptModel

        return ResidualPromptModel
    raise AttributeError(f"module 'rpt_fast' has no attribute {name!r}")
