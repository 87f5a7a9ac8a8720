// The grouped ("separate") residual encoder: row i of x through MLP i. The per-row
// matrix-vector products are fused per-group loops (grouped_kernels.h) that stream each weight
// matrix once per pass; the element-wise steps are the same fused row kernels as the shared op,
// with one parameter row per input row.
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "checks.h"
#include "grouped_kernels.h"
#include "layout.h"
#include "row_kernels.h"

namespace rpt_native {
namespace {

int64_t check_params(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
                     const at::Tensor& b2, const at::Tensor& ln_weight) {
  check_x(x);
  const int64_t n = x.size(0), d = x.size(1);
  const int64_t m = bottleneck(w1, x, 1);
  check_like("w1", w1, x, {n, m, d});
  check_like("w2", w2, x, {n, d, m});
  check_like("b2", b2, x, {n, d});
  check_like("ln_weight", ln_weight, x, {n, d});
  return m;
}

}  // namespace

Forward grouped_residual_mlp_forward(const at::Tensor& x, const at::Tensor& w1,
                                     const at::Tensor& b1, const at::Tensor& w2,
                                     const at::Tensor& b2, const at::Tensor& ln_weight,
                                     const at::Tensor& ln_bias, double eps) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // inner ATen calls skip autograd
  const int64_t m = check_params(x, w1, w2, b2, ln_weight);
  const int64_t n = x.size(0), d = x.size(1);
  check_like("b1", b1, x, {n, m});
  check_like("ln_bias", ln_bias, x, {n, d});
  check_eps(eps);
  const auto b2c = b2.contiguous(), gc = ln_weight.contiguous(), bc = ln_bias.contiguous();

  const auto w1c = w1.contiguous(), b1c = b1.contiguous(), w2c = w2.contiguous();

  // h = relu(w1_i x_i + b1_i) with b1 inside the sum (one rounding before the ReLU), as in
  // the shared op; zb = z - b2 (rows w2_i h_i) is kept for the backward.
  at::Tensor h = at::empty({n, m}, x.options());
  at::Tensor zb = at::empty({n, d}, x.options());
  at::Tensor y = at::empty_like(x);
  at::Tensor mean = at::empty({n}, x.options().dtype(stats_dtype(x)));
  at::Tensor rstd = at::empty({n}, x.options().dtype(stats_dtype(x)));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "grouped_forward", [&] {
    grouped_gemv_(w1c.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b1c.data_ptr<scalar_t>(), n,
                  m, d, /*relu=*/true, h.data_ptr<scalar_t>());
    grouped_gemv_(w2c.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                  static_cast<const scalar_t*>(nullptr), n, d, m, /*relu=*/false,
                  zb.data_ptr<scalar_t>());
    layer_norm_residual_(zb.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b2c.data_ptr<scalar_t>(),
                         gc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(), d,
                         y.data_ptr<scalar_t>(), mean.data_ptr<stat_t<scalar_t>>(),
                         rstd.data_ptr<stat_t<scalar_t>>(),
                         n, d, eps);
  });
  return {y, h, zb, mean, rstd};
}

Backward grouped_residual_mlp_backward(const at::Tensor& dy, const at::Tensor& x,
                                       const at::Tensor& w1, const at::Tensor& w2,
                                       const at::Tensor& b2, const at::Tensor& ln_weight,
                                       const at::Tensor& h, const at::Tensor& zb,
                                       const at::Tensor& mean, const at::Tensor& rstd) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // inner ATen calls skip autograd
  const int64_t m = check_params(x, w1, w2, b2, ln_weight);
  const int64_t n = x.size(0), d = x.size(1);
  check_like("dy", dy, x, {n, d}, /*contiguous=*/true);
  check_like("h", h, x, {n, m}, /*contiguous=*/true);
  check_like("z", zb, x, {n, d}, /*contiguous=*/true);
  check_stats("mean", mean, x);
  check_stats("rstd", rstd, x);
  const auto b2c = b2.contiguous(), gc = ln_weight.contiguous();

  const auto w1c = w1.contiguous(), w2c = w2.contiguous();

  at::Tensor dz = at::empty({n, d}, x.options());
  at::Tensor dgamma = at::empty({n, d}, x.options());
  at::Tensor dbeta = at::empty({n, d}, x.options());
  at::Tensor db2 = at::empty({n, d}, x.options());
  at::Tensor dh = at::empty({n, m}, x.options());
  at::Tensor db1 = at::empty({n, m}, x.options());
  at::Tensor dx = at::empty_like(x);
  at::Tensor dw1c = at::empty({n, m, d}, x.options());
  at::Tensor dw2c = at::empty({n, d, m}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "grouped_backward", [&] {
    layer_norm_backward_grouped_(zb.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                 b2c.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                 mean.data_ptr<stat_t<scalar_t>>(),
                                 rstd.data_ptr<stat_t<scalar_t>>(), n, d,
                                 dz.data_ptr<scalar_t>(),
                                 dgamma.data_ptr<scalar_t>(), dbeta.data_ptr<scalar_t>(),
                                 db2.data_ptr<scalar_t>());
    // One pass over w2: dh_i = w2_i^T dz_i and dw2_i = dz_i h_i^T.
    grouped_gemv_backward_(w2c.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                           dz.data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr), n, d,
                           m, dh.data_ptr<scalar_t>(), dw2c.data_ptr<scalar_t>());
    relu_backward_grouped_(dh.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), n, m,
                           db1.data_ptr<scalar_t>());
    // One pass over w1: dx_i = dy_i + w1_i^T dh_i and dw1_i = dh_i x_i^T.
    grouped_gemv_backward_(w1c.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                           dh.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(), n, m, d,
                           dx.data_ptr<scalar_t>(), dw1c.data_ptr<scalar_t>());
  });
  at::Tensor dw1 = in_layout_of(dw1c, w1);
  at::Tensor dw2 = in_layout_of(dw2c, w2);
  return {dx, dw1, db1, dw2, in_layout_of(db2, b2), in_layout_of(dgamma, ln_weight),
          in_layout_of(dbeta, ln_weight)};
}

}  // namespace rpt_native
