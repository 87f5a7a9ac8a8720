// Input checks of the native ops. The kernels index raw pointers, so every size, dtype, device
// and layout they rely on is checked here first: a bad call raises a Python exception naming
// the argument, never reads out of bounds.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <vector>

namespace rpt_native {

// x: the (rows, d) activations every other argument is checked against.
inline void check_x(const at::Tensor& x, const char* name = "x") {
  TORCH_CHECK(x.defined(), name, ": expected a tensor, got None");
  TORCH_CHECK(x.device().is_cpu(), name, ": the native ops take CPU tensors, got device ",
              x.device());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kDouble, name,
              ": expected dtype float32, bfloat16 or float64, got ", dt);
  TORCH_CHECK(x.dim() == 2, name, ": expected a 2-D (rows, d) tensor, got shape ", x.sizes());
  TORCH_CHECK(x.size(0) >= 1 && x.size(1) >= 1, name,
              ": expected at least one row and one column, got shape ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), name, ": expected a contiguous tensor, got strides ",
              x.strides());
}

// What an empty 1-D weight most likely is: its own error says so.
inline const char* released_hint(const at::Tensor& t) {
  return t.dim() == 1 && t.numel() == 0
             ? "; this looks like a DeepSpeed ZeRO-3 parameter that was released and not gathered "
               "again: call the op inside the forward of the module that owns the parameter"
             : "";
}

// t must have `shape`, x's dtype and device; any strides unless `contiguous`.
inline void check_like(const char* name, const at::Tensor& t, const at::Tensor& x,
                       at::IntArrayRef shape, bool contiguous = false) {
  TORCH_CHECK(t.defined(), name, ": expected a tensor, got None");
  TORCH_CHECK(t.device() == x.device(), name, ": expected device ", x.device(),
              " (the device of x), got ", t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, ": expected dtype ", x.scalar_type(),
              " (the dtype of x), got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, ": expected shape ", shape, ", got ", t.sizes(),
              released_hint(t));
  TORCH_CHECK(!contiguous || t.is_contiguous(), name, ": expected a contiguous tensor, got strides ",
              t.strides());
}

// The dtype of the saved LayerNorm statistics: float64 for float64 x, float32 otherwise
// (stat_t in row_kernels.h).
inline at::ScalarType stats_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// mean/rstd: stats_dtype(x) (rows,) contiguous, on x's device.
inline void check_stats(const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.defined(), name, ": expected a tensor, got None");
  TORCH_CHECK(t.device() == x.device(), name, ": expected device ", x.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == stats_dtype(x), name, ": expected dtype ", stats_dtype(x),
              " (the statistics of a ", x.scalar_type(), " x), got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(0), name, ": expected shape [", x.size(0),
              "], got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, ": expected a contiguous tensor");
}

inline void check_eps(double eps) {
  TORCH_CHECK(std::isfinite(eps) && eps > 0, "eps: expected a positive finite float, got ", eps);
}

// The bottleneck m of w1, which must be lead + (m, d) with m >= 1.
inline int64_t bottleneck(const at::Tensor& w1, const at::Tensor& x, int64_t lead_dims) {
  TORCH_CHECK(w1.defined(), "w1: expected a tensor, got None");
  TORCH_CHECK(w1.dim() == lead_dims + 2 && w1.size(-1) == x.size(1) && w1.size(-2) >= 1,
              "w1: expected shape ", (lead_dims ? "(n, m, " : "(m, "), x.size(1),
              ") with m >= 1, got ", w1.sizes(), released_hint(w1));
  return w1.size(-2);
}

}  // namespace rpt_native
