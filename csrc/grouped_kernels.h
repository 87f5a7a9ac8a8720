// Fused per-group matrix-vector kernels of the grouped op: the op is memory-bound (one GEMV per
// group), so each weight matrix is streamed once per pass. Work is split into tasks of
// (group, block of output columns/rows); every output element is a sum over a fixed index
// order inside one task, so results do not depend on the thread count or the blocking.
// Accumulation is in at::opmath_type (float for bfloat16/float, double for double).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rpt_native {

// Blocks per group along a dimension of `len`: one unless there are too few groups to keep
// every thread busy. Only the split of work depends on it, never the summation order.
inline int64_t blocks_per_group(int64_t groups, int64_t len) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t want = (4 * threads + groups - 1) / groups;
  const int64_t most = std::max<int64_t>(1, len / 64);
  return std::max<int64_t>(1, std::min(want, most));
}

// Runs fn(group, begin, end) over [0, len) of every group in blocks, in parallel. Block
// starts are multiples of `align`, so a kernel that handles `align` indices at a time sees the
// same index tuples whatever the blocking.
template <typename F>
void for_group_blocks(int64_t groups, int64_t len, const F& fn, int64_t align = 1) {
  const int64_t nb = blocks_per_group(groups, len);
  const int64_t bs = ((len + nb - 1) / nb + align - 1) / align * align;
  at::parallel_for(0, groups * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t g = t / nb, b = t % nb;
      const int64_t lo = b * bs, hi = std::min(len, lo + bs);
      if (lo < hi) fn(g, lo, hi);
    }
  });
}

template <typename T, typename acc_t>
inline acc_t dot_row(const T* __restrict__ w, const acc_t* __restrict__ v, int64_t len) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < len; ++j) s += static_cast<acc_t>(w[j]) * v[j];
  return s;
}

// Four dot products against the same vector: four independent accumulator chains (one alone
// is bound by the add latency, not by memory).
template <typename T, typename acc_t>
inline void dot_rows4(const T* __restrict__ w0, const T* __restrict__ w1, const T* __restrict__ w2,
                      const T* __restrict__ w3, const acc_t* __restrict__ v, int64_t len,
                      acc_t* out) {
  acc_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t j = 0; j < len; ++j) {
    const acc_t vj = v[j];
    s0 += static_cast<acc_t>(w0[j]) * vj;
    s1 += static_cast<acc_t>(w1[j]) * vj;
    s2 += static_cast<acc_t>(w2[j]) * vj;
    s3 += static_cast<acc_t>(w3[j]) * vj;
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// out[g, r] = act(sum_j w[g, r, j] * v[g, j] (+ bias[g, r])) for w (groups, rows, cols)
// contiguous; act is ReLU when `relu`. One rounding to T after the bias.
template <typename T>
void grouped_gemv_(const T* w, const T* v, const T* bias, int64_t groups, int64_t rows,
                   int64_t cols, bool relu, T* out) {
  using acc_t = at::opmath_type<T>;
  for_group_blocks(groups, rows, [&](int64_t g, int64_t lo, int64_t hi) {
    std::vector<acc_t> vv(cols);
    const T* vg = v + g * cols;
    for (int64_t j = 0; j < cols; ++j) vv[j] = static_cast<acc_t>(vg[j]);
    const auto finish = [&](int64_t r, acc_t s) {
      const int64_t o = g * rows + r;
      if (bias != nullptr) s += static_cast<acc_t>(bias[o]);
      const T t = static_cast<T>(s);
      out[o] = (relu && s < acc_t(0)) ? T(0) : t;  // NaN propagates, as in torch.relu
    };
    const T* wg = w + g * rows * cols;
    int64_t r = lo;
    for (; r + 4 <= hi; r += 4) {  // lo is a multiple of 4 (block alignment)
      acc_t s[4];
      dot_rows4(wg + r * cols, wg + (r + 1) * cols, wg + (r + 2) * cols, wg + (r + 3) * cols,
                vv.data(), cols, s);
      for (int k = 0; k < 4; ++k) finish(r + k, s[k]);
    }
    for (; r < hi; ++r) finish(r, dot_row(wg + r * cols, vv.data(), cols));  // last rows % 4
  }, /*align=*/4);
}

// Backward of out = W v through W (groups, rows, cols) contiguous, in one pass over W:
// dv[g, :] = init[g, :] + sum_r W[g, r, :] * dout[g, r] (init may be null) and
// dW[g, r, :] = dout[g, r] * v[g, :].
template <typename T>
void grouped_gemv_backward_(const T* w, const T* v, const T* dout, const T* init, int64_t groups,
                            int64_t rows, int64_t cols, T* dv, T* dw) {
  using acc_t = at::opmath_type<T>;
  for_group_blocks(groups, cols, [&](int64_t g, int64_t lo, int64_t hi) {
    const int64_t len = hi - lo;
    std::vector<acc_t> acc_buf(len), v_buf(len);
    acc_t* __restrict__ acc = acc_buf.data();
    acc_t* __restrict__ vv = v_buf.data();
    const T* vg = v + g * cols + lo;
    for (int64_t j = 0; j < len; ++j) {
      vv[j] = static_cast<acc_t>(vg[j]);
      acc[j] = init != nullptr ? static_cast<acc_t>(init[g * cols + lo + j]) : acc_t(0);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = g * rows + r;
      const acc_t dr = static_cast<acc_t>(dout[o]);
      const T* __restrict__ wr = w + o * cols + lo;
      T* __restrict__ dwr = dw + o * cols + lo;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        acc[j] += static_cast<acc_t>(wr[j]) * dr;
        dwr[j] = static_cast<T>(dr * vv[j]);
      }
    }
    T* dvg = dv + g * cols + lo;
    for (int64_t j = 0; j < len; ++j) dvg[j] = static_cast<T>(acc[j]);
  });
}

}  // namespace rpt_native
