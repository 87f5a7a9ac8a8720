// Registers the native ops in the rpt_fast_native namespace (the Python custom ops own
// rpt_fast::*): the forward and backward kernels, and `residual_mlp` / `grouped_residual_mlp`,
// which return y with their own autograd (autograd.cpp). Kernels of the first four here; the
// fake (meta) implementations live in rpt_fast/ops/native.py, next to the loader, so symbolic
// shapes work under torch.compile.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(rpt_fast_native, m) {
  m.def(
      "residual_mlp_forward(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, "
      "Tensor ln_weight, Tensor ln_bias, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "residual_mlp_backward(Tensor dy, Tensor x, Tensor w1, Tensor w2, Tensor b2, "
      "Tensor ln_weight, Tensor h, Tensor z, Tensor mean, Tensor rstd) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "grouped_residual_mlp_forward(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, "
      "Tensor ln_weight, Tensor ln_bias, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "grouped_residual_mlp_backward(Tensor dy, Tensor x, Tensor w1, Tensor w2, Tensor b2, "
      "Tensor ln_weight, Tensor h, Tensor z, Tensor mean, Tensor rstd) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "residual_mlp(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor ln_weight, "
      "Tensor ln_bias, float eps) -> Tensor");
  m.def(
      "grouped_residual_mlp(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, "
      "Tensor ln_weight, Tensor ln_bias, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(rpt_fast_native, CPU, m) {
  m.impl("residual_mlp_forward", &rpt_native::residual_mlp_forward);
  m.impl("residual_mlp_backward", &rpt_native::residual_mlp_backward);
  m.impl("grouped_residual_mlp_forward", &rpt_native::grouped_residual_mlp_forward);
  m.impl("grouped_residual_mlp_backward", &rpt_native::grouped_residual_mlp_backward);
}
