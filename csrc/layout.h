// Output layouts: gradients take the strides at::empty_like(param) gives (those of a dense
// parameter, contiguous otherwise), matching the fake implementations in Python.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

namespace rpt_native {

// `computed` (contiguous, written by a raw-pointer kernel) in the layout of empty_like(param).
inline at::Tensor in_layout_of(const at::Tensor& computed, const at::Tensor& param) {
  at::Tensor out = at::empty_like(param);
  if (out.is_contiguous()) return computed;
  out.copy_(computed);
  return out;
}

}  // namespace rpt_native
