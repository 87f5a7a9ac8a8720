// GEMMs whose results do not depend on the thread count. A multi-threaded BLAS splits a
// product by the number of threads (MKL splits the reduction of some shapes), so its results
// change with torch.set_num_threads. Here the output is cut into a grid of tiles that depends on
// the shapes only, each tile is one single-threaded BLAS call (whole reduction inside it), and
// the tiles run in parallel: every element is summed in the same order whatever the threads.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>

// MKL's C entry point for this thread's thread count, when torch links MKL (weak: absent from
// other BLAS builds). Returns the previous local setting (0: none, the global one applies).
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace rpt_native {

// Single-threaded BLAS on this thread while alive: MKL's thread-local count, and the OpenMP
// count that OpenMP-threaded libraries (oneDNN) read. MKL picks its kernel by its thread count
// even where it would run serially, so the serial and parallel paths below must both set it.
class SerialBlas {
 public:
  SerialBlas() : omp_threads_(omp_get_max_threads()) {
    omp_set_num_threads(1);
    if (MKL_Set_Num_Threads_Local != nullptr) mkl_previous_ = MKL_Set_Num_Threads_Local(1);
  }
  ~SerialBlas() {
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(mkl_previous_);
    omp_set_num_threads(omp_threads_);
  }
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;

 private:
  int omp_threads_;
  int mkl_previous_ = 0;
};

constexpr int64_t kMinTileSide = 256;

// Tile edge rounded to a multiple of 16 rows/columns.
inline int64_t tile_edge(int64_t len, int64_t parts) {
  return std::max<int64_t>(16, ((len + parts - 1) / parts + 15) / 16 * 16);
}

// out (rows, cols) = gemm over a reduction of length `depth`, as tiles: tile(r0, rn, c0, cn)
// computes out[r0:r0+rn, c0:c0+cn] with one BLAS call on narrowed views. The tile grid is a
// function of (rows, cols, depth) only: up to 64 tiles of >= ~1 MFLOP, the longer output
// side halved first, never below kMinTileSide. Small tiles are slow: one thread, fwd+bwd at
// (8192, 2048, 400), measured ~30% slower with 16-row tiles, ~5-10% with 256, than untiled.
template <typename F>
void tiled_gemm(int64_t rows, int64_t cols, int64_t depth, const F& tile) {
  const int64_t flops = 2 * rows * cols * depth;
  const int64_t want = std::clamp<int64_t>(flops >> 20, 1, 64);
  int64_t pr = 1, pc = 1;
  while (pr * pc < want) {
    const int64_t tr = rows / pr, tc = cols / pc;
    if (tr >= tc && tr >= 2 * kMinTileSide) {
      pr *= 2;
    } else if (tc >= 2 * kMinTileSide) {
      pc *= 2;
    } else {
      break;
    }
  }
  const int64_t er = tile_edge(rows, pr), ec = tile_edge(cols, pc);
  const int64_t nr = (rows + er - 1) / er, nc = (cols + ec - 1) / ec;
  const int64_t tiles = nr * nc;
  const auto run = [&](int64_t t) {
    const int64_t r0 = (t / nc) * er, c0 = (t % nc) * ec;
    tile(r0, std::min(er, rows - r0), c0, std::min(ec, cols - c0));
  };
  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads <= 1 || tiles == 1) {
    const SerialBlas serial;
    for (int64_t t = 0; t < tiles; ++t) run(t);
    return;
  }
  std::exception_ptr error;  // an exception may not leave a parallel region: rethrown after
#pragma omp parallel num_threads(threads)
  {
    const SerialBlas serial;
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // thread-local: set per thread
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      try {
        run(t);
      } catch (...) {
#pragma omp critical(rpt_native_tiled_gemm_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// out = a @ b (+ add: a 1-D row of out's width, or a matrix of out's shape), tile by tile.
// a (rows, depth) and b (depth, cols) may be any strided views; out is contiguous.
inline void tiled_mm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                         const at::Tensor* add = nullptr) {
  tiled_gemm(out.size(0), out.size(1), a.size(1), [&](int64_t r0, int64_t rn, int64_t c0,
                                                     int64_t cn) {
    at::Tensor o = out.narrow(0, r0, rn).narrow(1, c0, cn);
    const at::Tensor ta = a.narrow(0, r0, rn), tb = b.narrow(1, c0, cn);
    if (add == nullptr) {
      at::mm_out(o, ta, tb);
    } else if (add->dim() == 1) {
      at::addmm_out(o, add->narrow(0, c0, cn), ta, tb);
    } else {
      at::addmm_out(o, add->narrow(0, r0, rn).narrow(1, c0, cn), ta, tb);
    }
  });
}

}  // namespace rpt_native
