// Fused element-wise passes of the residual encoder, one pass over memory each, between the
// GEMMs that ATen runs. Row r of a matrix uses parameter row r * param_stride (0 for the shared
// op, whose parameters are one vector; the row length for the grouped op, one vector per row).
// Accumulation is in at::opmath_type (float for bfloat16/float, double for double); LayerNorm
// statistics are stored in stat_t, the same type: float64 inputs keep float64 statistics, so
// their gradients carry float64 rounding only. Column sums are reduced over fixed row chunks in
// a fixed order, so results do not depend on the thread count.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace rpt_native {

// The dtype of the saved LayerNorm mean/rstd of a T input: float, double for double.
template <typename T>
using stat_t = at::opmath_type<T>;

// Sums of one row in kLanes fixed lanes: term j goes to lane j % kLanes, and the lanes are added
// in lane order at the end. A plain `sum += t` loop stays scalar: vectorizing it would reorder
// the sum, which the compiler may not do without -ffast-math, and `omp simd reduction` left the
// forward LayerNorm's first pass scalar too (g++ 12, -O3). With the lanes written out it
// vectorizes: fwd at (4096, 2048, 16), one thread, 15-17 ms against 19-21 ms. The order is a
// function of the row length only, so results stay the same for every thread count.
constexpr int64_t kLanes = 16;

// {sum_j first(j), sum_j second(j)} for j in [0, n); term(j, first, second) adds term j's two
// values into the given accumulators (and may store per-element results on the way).
template <typename acc_t, typename Term>
inline std::pair<acc_t, acc_t> lane_sums(int64_t n, const Term& term) {
  acc_t a[kLanes] = {}, b[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) term(j + l, a[l], b[l]);
  }
  for (int64_t l = 0; j + l < n; ++l) term(j + l, a[l], b[l]);
  acc_t sa = 0, sb = 0;
  for (int64_t l = 0; l < kLanes; ++l) {
    sa += a[l];
    sb += b[l];
  }
  return {sa, sb};
}

// Rows handed to one task: at least ~32k elements of work so tiny calls stay on one thread.
inline int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)); }

// Rows per partial sum of a column reduction; a function of the row count only (determinism).
inline int64_t chunk_rows(int64_t rows) {
  constexpr int64_t kMaxChunks = 64;
  return std::max<int64_t>(16, (rows + kMaxChunks - 1) / kMaxChunks);
}

// y = LN(z) * gamma + beta + x with z = zb + b2, zb = h @ w2^T (no bias); mean and rstd of
// each row of z are written as stat_t<T>.
template <typename T>
void layer_norm_residual_(const T* zb, const T* x, const T* b2, const T* gamma, const T* beta,
                          int64_t param_stride, T* y, stat_t<T>* mean_out, stat_t<T>* rstd_out,
                          int64_t rows, int64_t d, double eps) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> z_buf(d);
    acc_t* __restrict__ z = z_buf.data();
    for (int64_t r = begin; r < end; ++r) {
      const T* __restrict__ zr = zb + r * d;
      T* __restrict__ yr = y + r * d;
      const T* __restrict__ xr = x + r * d;
      const int64_t p = r * param_stride;
      const acc_t sum = lane_sums<acc_t>(d, [&](int64_t j, acc_t& s, acc_t&) {
        z[j] = static_cast<acc_t>(zr[j]) + static_cast<acc_t>(b2[p + j]);
        s += z[j];
      }).first;
      const acc_t mean = sum / static_cast<acc_t>(d);
      const acc_t sq = lane_sums<acc_t>(d, [&](int64_t j, acc_t& s, acc_t&) {
        const acc_t c = z[j] - mean;
        s += c * c;
      }).first;
      const acc_t rstd = acc_t(1) / std::sqrt(sq / static_cast<acc_t>(d) + static_cast<acc_t>(eps));
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        yr[j] = static_cast<T>((z[j] - mean) * rstd * static_cast<acc_t>(gamma[p + j]) +
                               static_cast<acc_t>(beta[p + j]) + static_cast<acc_t>(xr[j]));
      }
      mean_out[r] = mean;
      rstd_out[r] = rstd;
    }
  });
}

// LayerNorm backward of one row of z = zb + b2: zhat receives the normalised row, dz_acc the
// unrounded dz and dz its rounding to T; mean and rstd are the forward's saved statistics.
template <typename T, typename acc_t = at::opmath_type<T>>
inline void layer_norm_backward_row(const T* __restrict__ zb, const T* __restrict__ dy,
                                    const T* __restrict__ b2, const T* __restrict__ gamma,
                                    acc_t mean, acc_t rstd, int64_t d, acc_t* __restrict__ zhat,
                                    acc_t* __restrict__ dz_acc, T* __restrict__ dz) {
  const auto [s1, s2] = lane_sums<acc_t>(d, [&](int64_t j, acc_t& a, acc_t& b) {
    const acc_t zh = (static_cast<acc_t>(zb[j]) + static_cast<acc_t>(b2[j]) - mean) * rstd;
    const acc_t g = static_cast<acc_t>(gamma[j]) * static_cast<acc_t>(dy[j]);
    zhat[j] = zh;
    a += g;
    b += g * zh;
  });
  const acc_t c1 = s1 / static_cast<acc_t>(d);
  const acc_t c2 = s2 / static_cast<acc_t>(d);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) {
    const acc_t g = static_cast<acc_t>(gamma[j]) * static_cast<acc_t>(dy[j]);
    const acc_t v = rstd * (g - c1 - zhat[j] * c2);
    dz_acc[j] = v;
    dz[j] = static_cast<T>(v);
  }
}

// out[k][j] = sum over chunks c, in chunk order, of partials[c * outs.size() * cols + k * cols + j]:
// the column sums of several row-chunked partial arrays in one parallel pass, cast to T.
template <typename T, typename acc_t>
void reduce_chunks(const std::vector<acc_t>& partials, int64_t chunks, int64_t cols,
                   std::initializer_list<T*> outs) {
  const std::vector<T*> out(outs);
  const int64_t width = cols * static_cast<int64_t>(out.size());
  at::parallel_for(0, width, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      acc_t s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += partials[c * width + j];
      out[j / cols][j % cols] = static_cast<T>(s);
    }
  });
}

// Shared op: dz of all rows from zb = z - b2; column sums dgamma = sum dy*zhat, dbeta = sum dy,
// db2 = sum dz.
template <typename T>
void layer_norm_backward_shared_(const T* zb, const T* dy, const T* b2, const T* gamma,
                                 const stat_t<T>* mean, const stat_t<T>* rstd, int64_t rows, int64_t d,
                                 T* dz_out, T* dgamma, T* dbeta, T* db2) {
  using acc_t = at::opmath_type<T>;
  const int64_t per_chunk = chunk_rows(rows);
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  std::vector<acc_t> partials(chunks * 3 * d, acc_t(0));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> zhat(d), dz(d);
    for (int64_t c = begin; c < end; ++c) {
      acc_t* pg = partials.data() + c * 3 * d;
      acc_t* pb = pg + d;
      acc_t* pz = pb + d;
      const int64_t stop = std::min(rows, (c + 1) * per_chunk);
      for (int64_t r = c * per_chunk; r < stop; ++r) {
        const T* dyr = dy + r * d;
        layer_norm_backward_row(zb + r * d, dyr, b2, gamma, mean[r], rstd[r], d,
                                zhat.data(), dz.data(), dz_out + r * d);
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
          const acc_t g = static_cast<acc_t>(dyr[j]);
          pg[j] += g * zhat[j];
          pb[j] += g;
          pz[j] += dz[j];
        }
      }
    }
  });
  reduce_chunks(partials, chunks, d, {dgamma, dbeta, db2});
}

// Grouped op: row r uses parameter row r, so dgamma = dy * zhat, dbeta = dy and db2 = dz per row.
template <typename T>
void layer_norm_backward_grouped_(const T* zb, const T* dy, const T* b2, const T* gamma,
                                  const stat_t<T>* mean, const stat_t<T>* rstd, int64_t rows, int64_t d,
                                  T* dz_out, T* dgamma, T* dbeta, T* db2) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> zhat(d), dz(d);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t o = r * d;
      layer_norm_backward_row(zb + o, dy + o, b2 + o, gamma + o, mean[r], rstd[r], d,
                              zhat.data(), dz.data(), dz_out + o);
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        dgamma[o + j] = static_cast<T>(static_cast<acc_t>(dy[o + j]) * zhat[j]);
        dbeta[o + j] = dy[o + j];
        db2[o + j] = static_cast<T>(dz[j]);
      }
    }
  });
}

// dh = 0 where h <= 0, in place (a NaN h keeps its dh, as torch's threshold_backward);
// db1 = column sums of the masked dh (shared op).
template <typename T>
void relu_backward_shared_(T* dh, const T* h, int64_t rows, int64_t m, T* db1) {
  using acc_t = at::opmath_type<T>;
  const int64_t per_chunk = chunk_rows(rows);
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  std::vector<acc_t> partials(chunks * m, acc_t(0));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      acc_t* p = partials.data() + c * m;
      const int64_t stop = std::min(rows, (c + 1) * per_chunk);
      for (int64_t r = c * per_chunk; r < stop; ++r) {
        T* g = dh + r * m;
        const T* hr = h + r * m;
#pragma omp simd
        for (int64_t k = 0; k < m; ++k) {
          const T v = static_cast<acc_t>(hr[k]) <= acc_t(0) ? T(0) : g[k];  // NaN h: g, as torch
          g[k] = v;
          p[k] += static_cast<acc_t>(v);
        }
      }
    }
  });
  reduce_chunks(partials, chunks, m, {db1});
}

// dh = 0 where h <= 0, in place (a NaN h keeps its dh, as torch's threshold_backward), and
// db1 = dh, row by row (grouped op).
template <typename T>
void relu_backward_grouped_(T* dh, const T* h, int64_t rows, int64_t m, T* db1) {
  using acc_t = at::opmath_type<T>;
  at::parallel_for(0, rows * m, 32768, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const T v = static_cast<acc_t>(h[i]) <= acc_t(0) ? T(0) : dh[i];  // NaN h: dh, as torch
      dh[i] = v;
      db1[i] = v;
    }
  });
}

}  // namespace rpt_native
