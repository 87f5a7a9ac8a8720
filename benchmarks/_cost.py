"""The work an op must do (bytes that must move, FLOPs), whatever the implementation.

One definition for the package and the benchmarks: ``rpt_fast.ops.cost_model.op_cost`` (its
docstring gives the formulas); the cost model's floor uses the same function.
"""

from __future__ import annotations

from rpt_fast.ops.cost_model import op_cost

__all__ = ["op_cost"]
