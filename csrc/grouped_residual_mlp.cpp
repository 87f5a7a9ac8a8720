// The grouped ("separate") residual encoder: row i of x through MLP i. The per-row
// matrix-vector products are batched GEMMs through ATen; the element-wise steps are the same
// fused row kernels as the shared op, with one parameter row per input row.
#include "ops.h"

#include <ATen/Dispatch.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/relu.h>

#include "checks.h"
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

  // b1 inside the GEMM (one rounding before the ReLU), as in the shared op.
  at::Tensor h = at::empty({n, m}, x.options());
  at::Tensor h3 = h.unsqueeze(-1);
  at::baddbmm_out(h3, b1.unsqueeze(-1), w1, x.unsqueeze(-1));
  at::relu_(h);
  // zb = z - b2 (rows w2_i h_i) is kept for the backward, as in the shared op.
  at::Tensor zb = at::empty({n, d}, x.options());
  at::Tensor zb3 = zb.unsqueeze(-1);
  at::Tensor y = at::empty_like(x);
  at::Tensor mean = at::empty({n}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({n}, x.options().dtype(at::kFloat));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "grouped_forward", [&] {
    at::bmm_out(zb3, w2, h3);
    layer_norm_residual_(zb.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b2c.data_ptr<scalar_t>(),
                         gc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(), d,
                         y.data_ptr<scalar_t>(), mean.data_ptr<float>(), rstd.data_ptr<float>(),
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

  at::Tensor dz = at::empty({n, d}, x.options());
  at::Tensor dz3 = dz.unsqueeze(-1);
  at::Tensor dgamma = at::empty({n, d}, x.options());
  at::Tensor dbeta = at::empty({n, d}, x.options());
  at::Tensor db2 = at::empty({n, d}, x.options());
  at::Tensor dh = at::empty({n, m}, x.options());
  at::Tensor dh3 = dh.unsqueeze(-1);
  at::Tensor db1 = at::empty({n, m}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "grouped_backward", [&] {
    layer_norm_backward_grouped_(zb.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                                 b2c.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                 mean.data_ptr<float>(), rstd.data_ptr<float>(), n, d,
                                 dz.data_ptr<scalar_t>(),
                                 dgamma.data_ptr<scalar_t>(), dbeta.data_ptr<scalar_t>(),
                                 db2.data_ptr<scalar_t>());
    at::bmm_out(dh3, w2.transpose(1, 2), dz3);
    relu_backward_grouped_(dh.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), n, m,
                           db1.data_ptr<scalar_t>());
  });
  at::Tensor dw2 = at::empty_like(w2);
  at::bmm_out(dw2, dz3, h.unsqueeze(1));  // outer products dz_i h_i^T
  at::Tensor dx = at::empty_like(x);
  at::Tensor dx3 = dx.unsqueeze(-1);
  at::baddbmm_out(dx3, dy.unsqueeze(-1), w1.transpose(1, 2), dh3);  // dx = dy + w1_i^T dh_i
  at::Tensor dw1 = at::empty_like(w1);
  at::bmm_out(dw1, dh3, x.unsqueeze(1));  // outer products dh_i x_i^T
  return {dx, dw1, db1, dw2, in_layout_of(db2, b2), in_layout_of(dgamma, ln_weight),
          in_layout_of(dbeta, ln_weight)};
}

}  // namespace rpt_native
