// The shared residual encoder: GEMMs through ATen (the BLAS torch ships) on transposed views,
// cut into shape-fixed tiles (tiled_gemm.h: the same results for every thread count), written
// into preallocated outputs, with every element-wise step fused into the row kernels.
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/relu.h>

#include "checks.h"
#include "row_kernels.h"
#include "tiled_gemm.h"

namespace rpt_native {
namespace {

int64_t check_params(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
                     const at::Tensor& b2, const at::Tensor& ln_weight) {
  check_x(x);
  const int64_t d = x.size(1);
  const int64_t m = bottleneck(w1, x, 0);
  check_like("w1", w1, x, {m, d});
  check_like("w2", w2, x, {d, m});
  check_like("b2", b2, x, {d});
  check_like("ln_weight", ln_weight, x, {d});
  return m;
}

}  // namespace

Forward residual_mlp_forward(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                             const at::Tensor& w2, const at::Tensor& b2,
                             const at::Tensor& ln_weight, const at::Tensor& ln_bias, double eps) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // inner ATen calls skip autograd
  const int64_t m = check_params(x, w1, w2, b2, ln_weight);
  check_like("b1", b1, x, {m});
  check_like("ln_bias", ln_bias, x, {x.size(1)});
  check_eps(eps);
  const int64_t rows = x.size(0), d = x.size(1);
  const auto b2c = b2.contiguous(), gc = ln_weight.contiguous(), bc = ln_bias.contiguous();

  // b1 inside the GEMM, as nn.Linear: one rounding before the ReLU, so a bfloat16 h has the
  // eager backend's sign pattern (a flipped ReLU mask would cost a whole gradient element).
  at::Tensor h = at::empty({rows, m}, x.options());
  run_gemms({mm_job(h, x, w1.t(), b1, /*relu=*/true)});
  // zb = z - b2 = h @ w2^T is kept for the backward, so no GEMM recomputes it there; the row
  // kernels add b2 in at::opmath_type, so a bfloat16 z is never rounded, as when it was
  // recomputed (same results).
  at::Tensor zb = at::empty({rows, d}, x.options());
  at::Tensor y = at::empty_like(x);
  at::Tensor mean = at::empty({rows}, x.options().dtype(stats_dtype(x)));
  at::Tensor rstd = at::empty({rows}, x.options().dtype(stats_dtype(x)));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "residual_mlp_forward", [&] {
    run_gemms({mm_job(zb, h, w2.t())});
    layer_norm_residual_(zb.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b2c.data_ptr<scalar_t>(),
                         gc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(), 0,
                         y.data_ptr<scalar_t>(), mean.data_ptr<stat_t<scalar_t>>(),
                         rstd.data_ptr<stat_t<scalar_t>>(),
                         rows, d, eps);
  });
  return {y, h, zb, mean, rstd};
}

Backward residual_mlp_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w1,
                               const at::Tensor& w2, const at::Tensor& b2,
                               const at::Tensor& ln_weight, const at::Tensor& h,
                               const at::Tensor& zb, const at::Tensor& mean,
                               const at::Tensor& rstd) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // inner ATen calls skip autograd
  const int64_t m = check_params(x, w1, w2, b2, ln_weight);
  const int64_t rows = x.size(0), d = x.size(1);
  check_like("dy", dy, x, {rows, d}, /*contiguous=*/true);
  check_like("h", h, x, {rows, m}, /*contiguous=*/true);
  check_like("z", zb, x, {rows, d}, /*contiguous=*/true);
  check_stats("mean", mean, x);
  check_stats("rstd", rstd, x);
  const auto b2c = b2.contiguous(), gc = ln_weight.contiguous();

  at::Tensor dz = at::empty({rows, d}, x.options());
  at::Tensor dgamma = at::empty({d}, x.options());
  at::Tensor dbeta = at::empty({d}, x.options());
  at::Tensor db2 = at::empty({d}, x.options());
  at::Tensor db1 = at::empty({m}, x.options());
  at::Tensor dh = at::empty({rows, m}, x.options());
  at::Tensor dw2 = at::empty_like(w2);
  at::Tensor dw1 = at::empty_like(w1);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "residual_mlp_backward", [&] {
    layer_norm_backward_shared_(zb.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                b2c.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                mean.data_ptr<stat_t<scalar_t>>(),
                                rstd.data_ptr<stat_t<scalar_t>>(), rows, d,
                                dz.data_ptr<scalar_t>(),
                                dgamma.data_ptr<scalar_t>(), dbeta.data_ptr<scalar_t>(),
                                db2.data_ptr<scalar_t>());
    // dh = dz @ w2 and dw2 = dz^T h both read dz only: one parallel region.
    run_gemms({mm_job(dh, dz, w2), mm_job(dw2, dz.t(), h)});
    relu_backward_shared_(dh.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), rows, m,
                          db1.data_ptr<scalar_t>());
  });
  // dx = dy + dh @ w1 (the residual) and dw1 = dh^T x both read dh only: one parallel region.
  at::Tensor dx = at::empty_like(x);
  run_gemms({mm_job(dx, dh, w1, dy), mm_job(dw1, dh.t(), x)});
  return {dx, dw1, db1, dw2, db2, dgamma, dbeta};
}

}  // namespace rpt_native
