// The native ops' CPU implementations, registered in registration.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace rpt_native {

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Backward =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Shared op: x (M, d) contiguous; w1 (m, d), b1 (m), w2 (d, m), b2/ln_weight/ln_bias (d).
// Returns (y, h, zb, mean, rstd) with h = ReLU(x @ w1^T + b1), zb = h @ w2^T = z - b2 (kept so
// the backward needs no GEMM to recompute z) and row statistics of z (float64 for
// float64 x, else float32).
Forward residual_mlp_forward(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                             const at::Tensor& w2, const at::Tensor& b2,
                             const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps);

// Takes the forward's h, zb, mean and rstd; returns (dx, dw1, db1, dw2, db2, dln_weight, dln_bias).
Backward residual_mlp_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w1,
                               const at::Tensor& w2, const at::Tensor& b2,
                               const at::Tensor& ln_weight, const at::Tensor& h,
                               const at::Tensor& z, const at::Tensor& mean,
                               const at::Tensor& rstd);

// Grouped op: row i of x (n, d) through MLP i; w1 (n, m, d), b1 (n, m), w2 (n, d, m),
// b2/ln_weight/ln_bias (n, d). Same outputs as the shared op.
Forward grouped_residual_mlp_forward(const at::Tensor& x, const at::Tensor& w1,
                                     const at::Tensor& b1, const at::Tensor& w2,
                                     const at::Tensor& b2, const at::Tensor& ln_weight,
                                     const at::Tensor& ln_bias, double eps);

Backward grouped_residual_mlp_backward(const at::Tensor& dy, const at::Tensor& x,
                                       const at::Tensor& w1, const at::Tensor& w2,
                                       const at::Tensor& b2, const at::Tensor& ln_weight,
                                       const at::Tensor& h, const at::Tensor& z,
                                       const at::Tensor& mean, const at::Tensor& rstd);

}  // namespace rpt_native
