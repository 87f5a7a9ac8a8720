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
#include <ATen/ops/ones.h>
#include <ATen/ops/relu.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <utility>
#include <vector>

// MKL's C entry point for this thread's thread count, when torch links MKL (weak: absent from
// other BLAS builds). Returns the previous local setting (0: none, the global one applies).
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace rpt_native {

// The first sizeable GEMM that MKL runs on a thread takes another path than every later one,
// with other rounding (MKL_DISABLE_FAST_MM=1 removes the difference, so it is the first call's
// packing-buffer allocation): on a Xeon (MKL 2024.2, torch 2.13), dw1 = dh^T x at (48, 1000) x
// (1000, 64) in fp64 came out different on an OpenMP worker's first call only, so 1 and 2 threads
// disagreed about once in three runs under load. Each thread therefore runs one 512^3 product in
// fp32 and fp64, discarded, before its first tile (a 64^3 warm-up still failed once; with 512^3
// the full native suite passed 8 runs in a row beside three busy loops).
inline void warm_blas_once() {
  thread_local bool warm = false;
  if (warm) return;
  warm = true;
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const at::Tensor a = at::ones({512, 512}, at::TensorOptions().dtype(dtype));
    at::mm(a, a);
  }
}

// Single-threaded BLAS on this thread while alive: MKL's thread-local count, and the OpenMP
// count that OpenMP-threaded libraries (oneDNN) read. MKL picks its kernel by its thread count
// even where it would run serially, so the serial and parallel paths below must both set it.
class SerialBlas {
 public:
  SerialBlas() : omp_threads_(omp_get_max_threads()) {
    omp_set_num_threads(1);
    if (MKL_Set_Num_Threads_Local != nullptr) mkl_previous_ = MKL_Set_Num_Threads_Local(1);
    warm_blas_once();
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
// Narrower tiles for a skinny output (a side under kMinTileSide: the prompt's M <= 128 rows),
// so its other side still splits across threads. Each such tile streams its own slice of the
// weight; only the small M-row operand is read again per tile.
constexpr int64_t kMinSkinnyTileSide = 128;

// Tile edge rounded to a multiple of 16 rows/columns.
inline int64_t tile_edge(int64_t len, int64_t parts) {
  return std::max<int64_t>(16, ((len + parts - 1) / parts + 15) / 16 * 16);
}

// One GEMM cut into tiles: out (rows, cols) over a reduction of length `depth`;
// tile(r0, rn, c0, cn) computes out[r0:r0+rn, c0:c0+cn] with one BLAS call on narrowed views.
struct GemmJob {
  int64_t rows, cols, depth;
  std::function<void(int64_t, int64_t, int64_t, int64_t)> tile;
};

// The tile grid is a function of (rows, cols, depth) only: up to 64 tiles of >= ~2 MFLOP, the
// longer output side halved first, never below kMinTileSide (kMinSkinnyTileSide for a skinny
// output). Small tiles are slow: one thread, fwd+bwd at (8192, 2048, 400), measured ~30% slower
// with 16-row tiles, ~5-10% with 256, than untiled; one thread, dx at (10, 768, 400) took
// 0.10 ms as eight 96-column tiles against 0.065 ms as two, zb at (100, 768, 400) 0.43-0.46 ms
// as eight against 0.38-0.40 ms as one to four.
struct TileGrid {
  int64_t edge_rows, edge_cols, n_rows, n_cols;
  int64_t tiles() const { return n_rows * n_cols; }
};

inline TileGrid tile_grid(int64_t rows, int64_t cols, int64_t depth) {
  const int64_t want = std::clamp<int64_t>((2 * rows * cols * depth) >> 21, 1, 64);
  const int64_t side = std::min(rows, cols) < kMinTileSide ? kMinSkinnyTileSide : kMinTileSide;
  int64_t pr = 1, pc = 1;
  while (pr * pc < want) {
    const int64_t tr = rows / pr, tc = cols / pc;
    if (tr >= tc && tr >= 2 * side) {
      pr *= 2;
    } else if (tc >= 2 * side) {
      pc *= 2;
    } else {
      break;
    }
  }
  const int64_t er = tile_edge(rows, pr), ec = tile_edge(cols, pc);
  return {er, ec, (rows + er - 1) / er, (cols + ec - 1) / ec};
}

// Runs every tile of every job. Jobs given together must not depend on each other (the
// backward's data and weight gradients): their tiles share one parallel region, so two small
// GEMMs keep both threads busy where each alone would not, with one barrier for all.
inline void run_gemms(const std::vector<GemmJob>& jobs) {
  std::vector<std::pair<const GemmJob*, TileGrid>> grids;
  std::vector<std::pair<size_t, int64_t>> tiles;  // (job, tile): the work list
  for (const GemmJob& job : jobs) {
    grids.emplace_back(&job, tile_grid(job.rows, job.cols, job.depth));
    for (int64_t t = 0; t < grids.back().second.tiles(); ++t) {
      tiles.emplace_back(grids.size() - 1, t);
    }
  }
  const auto run = [&](const std::pair<size_t, int64_t>& item) {
    const auto& [job, g] = grids[item.first];
    const int64_t r0 = (item.second / g.n_cols) * g.edge_rows;
    const int64_t c0 = (item.second % g.n_cols) * g.edge_cols;
    job->tile(r0, std::min(g.edge_rows, job->rows - r0), c0,
              std::min(g.edge_cols, job->cols - c0));
  };
  const int64_t n = static_cast<int64_t>(tiles.size());
  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  if (threads <= 1 || n <= 1) {
    const SerialBlas serial;
    for (const auto& item : tiles) run(item);
    return;
  }
  std::exception_ptr error;  // an exception may not leave a parallel region: rethrown after
#pragma omp parallel num_threads(threads)
  {
    const SerialBlas serial;
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // thread-local: set per thread
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < n; ++t) {
      try {
        run(tiles[t]);
      } catch (...) {
#pragma omp critical(rpt_native_tiled_gemm_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// out = a @ b (+ add: a 1-D row of out's width, or a matrix of out's shape; undefined: none),
// then ReLU if `relu`, tile by tile (the ReLU runs on each tile while it is in cache). a (rows,
// depth) and b (depth, cols) may be any strided views; out is contiguous.
inline GemmJob mm_job(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                      const at::Tensor& add = at::Tensor(), bool relu = false) {
  return {out.size(0), out.size(1), a.size(1),
          [out, a, b, add, relu](int64_t r0, int64_t rn, int64_t c0, int64_t cn) {
            at::Tensor o = out.narrow(0, r0, rn).narrow(1, c0, cn);
            const at::Tensor ta = a.narrow(0, r0, rn), tb = b.narrow(1, c0, cn);
            if (!add.defined()) {
              at::mm_out(o, ta, tb);
            } else if (add.dim() == 1) {
              at::addmm_out(o, add.narrow(0, c0, cn), ta, tb);
            } else {
              at::addmm_out(o, add.narrow(0, r0, rn).narrow(1, c0, cn), ta, tb);
            }
            if (relu) at::relu_(o);
          }};
}

}  // namespace rpt_native
