// Decode path, m = 1..16 tokens: Y[m, N] = X[m, K] * W[N, K]^T with W packed 2:4 or V:2:M.
//
// Memory-bound by design: the packed weights are read exactly once, 16 bytes per lane per MMA
// (the GPU tiling puts each lane's A fragment in one uint4), and the arithmetic runs on the
// sparse tensor cores with the weight rows on the MMA's M side and the tokens on its N side
// (one or two n8 tiles). Each warp owns 16 weight rows and streams a range of K; a CTA is
// 16 * kWarps rows (for V:2:M it never crosses a row group) and one K split. Splits combine in a
// last-CTA-reduces epilogue (partials in the workspace, a counter per CTA row; deterministic
// order, counters reset by the reducer), so one launch does everything.
//
// X: per K chunk (256 columns for 2:4; 64 blocks = 256 virtual columns for V:2:M) the CTA
// stages tokens x 256 in shared memory (V:2:M gathers the 4 kept columns of each block from X),
// rows padded by 16 bytes so ldmatrix is conflict-free; B fragments come from ldmatrix.x4.
//
// Versions (H100, see docs/kernels-gpu.md for measured numbers):
//   v1  this file: register double-buffered weight stream (8 x 16 B per lane in flight),
//       synchronous X staging per chunk, last-CTA split-K reduction.
#include <algorithm>

#include "cuda/mma_sp.cuh"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kChunkCols = 256;             // virtual K per chunk (8 k-steps of 32)
constexpr int kStride = kChunkCols + 8;     // smem row stride in elements (+16 B)

struct DecodeParams {
  const uint4* values;     // tiled values
  const uint4* meta;       // tiled metadata
  const uint32_t* columns; // V:2:M column offsets [row_groups_padded][blocks_padded]
  const void* x;
  int64_t ldx;
  int m;
  int64_t cols;            // K
  void* y;
  int64_t ldy;
  int64_t rows, rows_padded;
  int64_t ksteps;          // k-steps per row tile
  int64_t kchunks;         // chunks per row tile
  int kc_per_split, splits;
  int v, bm;               // V:2:M: V and M (block width)
  int64_t blocks_padded;
  float* partials;         // [splits][16][rows_padded]
  unsigned* counters;      // [gridDim.x]
};

template <typename T>
__device__ __forceinline__ T load_elem(const T* p) {
  return *p;
}

// Stages X[0:m, chunk] (2:4: contiguous columns) into smem rows of kStride elements.
template <typename T, int kThreads>
__device__ __forceinline__ void stage_dense(T* smem, const DecodeParams& p, int64_t col0) {
  const T* x = static_cast<const T*>(p.x);
  const int total = p.m * (kChunkCols / 8);
  for (int idx = threadIdx.x; idx < total; idx += kThreads) {
    const int tok = idx / (kChunkCols / 8), chunk = idx % (kChunkCols / 8);
    const int64_t col = col0 + chunk * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    const T* src = x + tok * p.ldx + col;
    if (col + 8 <= p.cols) {
      v = __ldg(reinterpret_cast<const uint4*>(src));
    } else if (col < p.cols) {
      alignas(16) T tmp[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) tmp[i] = col + i < p.cols ? src[i] : T(0.0f);
      v = *reinterpret_cast<const uint4*>(tmp);
    }
    *reinterpret_cast<uint4*>(smem + tok * kStride + chunk * 8) = v;
  }
}

// Stages the gathered X for one chunk of 64 V:2:M blocks: virtual column 4*b + j is real column
// (block0 + b) * M + offset_j.
template <typename T, int kThreads>
__device__ __forceinline__ void stage_gather(T* smem, const DecodeParams& p, int64_t block0,
                                             const uint32_t* columns) {
  const T* x = static_cast<const T*>(p.x);
  const int total = p.m * (kChunkCols / 2);
  for (int idx = threadIdx.x; idx < total; idx += kThreads) {
    const int tok = idx / (kChunkCols / 2), q = idx % (kChunkCols / 2);
    const int64_t block = block0 + (q >> 1);
    const uint32_t offsets = __ldg(columns + block) >> (16 * (q & 1));
    const int64_t c0 = block * p.bm + (offsets & 0xff), c1 = block * p.bm + ((offsets >> 8) & 0xff);
    const T* row = x + tok * p.ldx;
    const T v0 = c0 < p.cols ? row[c0] : T(0.0f);
    const T v1 = c1 < p.cols ? row[c1] : T(0.0f);
    alignas(4) T pair[2] = {v0, v1};
    *reinterpret_cast<uint32_t*>(smem + tok * kStride + 2 * q) =
        *reinterpret_cast<const uint32_t*>(pair);
  }
}

template <typename Elem, bool kVnm, int kWarps, int kNTiles, typename OutT>
__global__ void __launch_bounds__(kWarps * 32) decode_kernel(const DecodeParams p) {
  using T = typename Elem::T;
  constexpr int kThreads = kWarps * 32;
  constexpr int kTokens = kNTiles * 8;
  __shared__ __align__(16) T xs[kTokens * kStride];
  __shared__ int s_last;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row_tile = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int split = blockIdx.y;
  const int64_t kc_begin = static_cast<int64_t>(split) * p.kc_per_split;
  const int64_t kc_end = min(kc_begin + p.kc_per_split, p.kchunks);

  // Token rows past m stay zero for the whole kernel.
  for (int i = threadIdx.x; i < (kTokens - p.m) * kStride; i += kThreads)
    xs[p.m * kStride + i] = T(0.0f);

  const uint4* vptr = p.values + row_tile * p.ksteps * 32 + lane;
  const uint4* mptr = p.meta + row_tile * p.kchunks * 32 + lane;
  const uint32_t* columns = nullptr;
  if constexpr (kVnm) {
    const int64_t group = static_cast<int64_t>(blockIdx.x) * kWarps * 16 / p.v;
    columns = p.columns + group * p.blocks_padded;
  }

  float acc[kNTiles][4] = {};
  uint4 a_cur[8] = {}, e_cur = {}, a_nxt[8] = {}, e_nxt = {};
  if (kc_begin < kc_end) {
#pragma unroll
    for (int s = 0; s < 8; ++s) a_cur[s] = ldg_stream(vptr + (kc_begin * 8 + s) * 32);
    e_cur = ldg_stream(mptr + kc_begin * 32);
  }
  const uint32_t xs_base = smem_addr(xs);
  // ldmatrix: lane l addresses token l % 8 of the n-tile, 8-column group l / 8 of the k-step.
  const uint32_t lane_off = ((lane & 7) * kStride + (lane >> 3) * 8) * sizeof(T);

#pragma unroll 1
  for (int64_t kc = kc_begin; kc < kc_end; ++kc) {
    if (kc + 1 < kc_end) {
#pragma unroll
      for (int s = 0; s < 8; ++s) a_nxt[s] = ldg_stream(vptr + ((kc + 1) * 8 + s) * 32);
      e_nxt = ldg_stream(mptr + (kc + 1) * 32);
    }
    __syncthreads();  // the previous chunk's ldmatrix reads are done
    if constexpr (kVnm) {
      stage_gather<T, kThreads>(xs, p, kc * 64, columns);
    } else {
      stage_dense<T, kThreads>(xs, p, kc * kChunkCols);
    }
    __syncthreads();
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      const uint32_t a[4] = {a_cur[s].x, a_cur[s].y, a_cur[s].z, a_cur[s].w};
      const uint32_t e = (s >> 1) == 0 ? e_cur.x : (s >> 1) == 1 ? e_cur.y
                         : (s >> 1) == 2 ? e_cur.z : e_cur.w;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        uint32_t b[4];
        ldmatrix_x4(b, xs_base + lane_off + (nt * 8 * kStride + s * 32) * sizeof(T));
        if (s & 1) {
          mma_sp<Elem, 1>(acc[nt], a, b, e);
        } else {
          mma_sp<Elem, 0>(acc[nt], a, b, e);
        }
      }
    }
#pragma unroll
    for (int s = 0; s < 8; ++s) a_cur[s] = a_nxt[s];
    e_cur = e_nxt;
  }

  // acc[nt][i]: weight row 16*row_tile + g + 8*(i>>1), token 8*nt + 2t + (i&1).
  const int g = lane >> 2, t = lane & 3;
  if (p.splits == 1) {
    OutT* y = static_cast<OutT*>(p.y);
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int tok = nt * 8 + 2 * t + (i & 1);
        const int64_t row = row_tile * 16 + g + 8 * (i >> 1);
        if (tok < p.m && row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(acc[nt][i]);
      }
    return;
  }
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int tok = nt * 8 + 2 * t + (i & 1);
      const int64_t row = row_tile * 16 + g + 8 * (i >> 1);
      if (tok < p.m) p.partials[(split * 16LL + tok) * p.rows_padded + row] = acc[nt][i];
    }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned prev = atomicAdd(p.counters + blockIdx.x, 1u);
    s_last = prev == static_cast<unsigned>(p.splits - 1);
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  OutT* y = static_cast<OutT*>(p.y);
  constexpr int kRows = kWarps * 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  for (int idx = threadIdx.x; idx < p.m * kRows; idx += kThreads) {
    const int tok = idx / kRows;
    const int64_t row = row0 + idx % kRows;
    float sum = 0.0f;
    for (int sp = 0; sp < p.splits; ++sp)
      sum += __ldcg(p.partials + (sp * 16LL + tok) * p.rows_padded + row);
    if (row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(sum);
  }
  if (threadIdx.x == 0) p.counters[blockIdx.x] = 0;
}

struct SplitPlan {
  int splits, kc_per_split;
};

SplitPlan plan_splits(int requested, int64_t row_tiles, int64_t kchunks) {
  int splits = requested > 0 ? requested : decode_auto_splits(row_tiles, kchunks, sm_count());
  splits = static_cast<int>(std::clamp<int64_t>(splits, 1, std::min<int64_t>(kchunks, 64)));
  const int kcps = static_cast<int>((kchunks + splits - 1) / splits);
  return {static_cast<int>((kchunks + kcps - 1) / kcps), kcps};
}

size_t counters_bytes(int64_t rows_padded) {
  return static_cast<size_t>((rows_padded / 16) * sizeof(unsigned) + 255) / 256 * 256;
}

size_t workspace_for(int64_t rows_padded, int splits) {
  if (splits <= 1) return 0;
  return counters_bytes(rows_padded) + static_cast<size_t>(splits) * 16 * rows_padded * 4;
}

template <typename Elem, bool kVnm, int kWarps, int kNTiles>
cudaError_t launch(DecodeParams p, ElemType y_type, int64_t row_tiles, cudaStream_t stream) {
  return dispatch_out(y_type, [&](auto out) -> cudaError_t {
    using OutT = decltype(out);
    const dim3 grid(static_cast<unsigned>(row_tiles / kWarps), static_cast<unsigned>(p.splits));
    decode_kernel<Elem, kVnm, kWarps, kNTiles, OutT><<<grid, kWarps * 32, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

template <bool kVnm, int kWarps>
cudaError_t launch_tiles(DecodeParams p, ElemType type, ElemType y_type, int64_t row_tiles,
                         cudaStream_t stream) {
  if (type == ElemType::F16) {
    return p.m <= 8 ? launch<F16, kVnm, kWarps, 1>(p, y_type, row_tiles, stream)
                    : launch<F16, kVnm, kWarps, 2>(p, y_type, row_tiles, stream);
  }
  return p.m <= 8 ? launch<BF16, kVnm, kWarps, 1>(p, y_type, row_tiles, stream)
                  : launch<BF16, kVnm, kWarps, 2>(p, y_type, row_tiles, stream);
}

cudaError_t check_problem(const GemmProblem& pr, ElemType type, int64_t rows_padded) {
  if (type != ElemType::F16 && type != ElemType::BF16) return cudaErrorInvalidValue;
  if (pr.m < 1 || pr.m > kDecodeMaxM || !pr.x || !pr.y) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (rows_padded % kRowTile != 0) return cudaErrorInvalidValue;
  return cudaSuccess;
}

DecodeParams base_params(const GemmProblem& pr, const SplitPlan& plan, int64_t rows,
                         int64_t rows_padded, int64_t cols) {
  DecodeParams p{};
  p.x = pr.x;
  p.ldx = pr.ldx;
  p.m = static_cast<int>(pr.m);
  p.cols = cols;
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.rows = rows;
  p.rows_padded = rows_padded;
  p.splits = plan.splits;
  p.kc_per_split = plan.kc_per_split;
  if (plan.splits > 1) {
    p.counters = static_cast<unsigned*>(pr.workspace);
    p.partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) +
                                          counters_bytes(rows_padded));
  }
  return p;
}

}  // namespace

int decode_auto_splits(int64_t row_tiles, int64_t k_chunks, int sm_count) {
  // Enough warps to keep ~16 per SM streaming, each over at least one chunk.
  const int64_t target_warps = static_cast<int64_t>(sm_count) * 16;
  const int64_t splits = (target_warps + row_tiles - 1) / row_tiles;
  return static_cast<int>(std::clamp<int64_t>(splits, 1, std::min<int64_t>(k_chunks, 16)));
}

size_t nm24_workspace_bytes(const Nm24Weights& w, int64_t m, int splits) {
  const SplitPlan plan = plan_splits(splits, w.rows_padded / 16, w.cols_padded / kKChunk);
  return workspace_for(w.rows_padded, plan.splits);
}

size_t vnm_workspace_bytes(const VnmWeights& w, int64_t m, int splits) {
  const SplitPlan plan = plan_splits(splits, w.rows_padded / 16, w.blocks_padded / 64);
  return workspace_for(w.rows_padded, plan.splits);
}

cudaError_t nm24_decode(const Nm24Weights& w, const GemmProblem& pr, cudaStream_t stream) {
  if (cudaError_t e = check_problem(pr, w.type, w.rows_padded); e != cudaSuccess) return e;
  if (w.cols_padded % kKChunk != 0) return cudaErrorInvalidValue;
  const int64_t row_tiles = w.rows_padded / 16, kchunks = w.cols_padded / kKChunk;
  const SplitPlan plan = plan_splits(pr.splits, row_tiles, kchunks);
  if (pr.workspace_bytes < workspace_for(w.rows_padded, plan.splits)) return cudaErrorInvalidValue;
  DecodeParams p = base_params(pr, plan, w.rows, w.rows_padded, w.cols);
  p.values = static_cast<const uint4*>(w.values);
  p.meta = reinterpret_cast<const uint4*>(w.meta);
  p.ksteps = w.cols_padded / 32;
  p.kchunks = kchunks;
  return launch_tiles<false, 4>(p, w.type, pr.y_type, row_tiles, stream);
}

cudaError_t vnm_decode(const VnmWeights& w, const GemmProblem& pr, cudaStream_t stream) {
  if (cudaError_t e = check_problem(pr, w.type, w.rows_padded); e != cudaSuccess) return e;
  if (w.blocks_padded % 64 != 0 || (w.v != 16 && w.v != 32 && w.v != 64 && w.v != 128) ||
      w.m < 4 || w.m > 256)
    return cudaErrorInvalidValue;
  const int64_t row_tiles = w.rows_padded / 16, kchunks = w.blocks_padded / 64;
  const SplitPlan plan = plan_splits(pr.splits, row_tiles, kchunks);
  if (pr.workspace_bytes < workspace_for(w.rows_padded, plan.splits)) return cudaErrorInvalidValue;
  DecodeParams p = base_params(pr, plan, w.rows, w.rows_padded, w.cols);
  p.values = static_cast<const uint4*>(w.values);
  p.meta = reinterpret_cast<const uint4*>(w.meta);
  p.columns = w.columns;
  p.ksteps = w.blocks_padded / 8;
  p.kchunks = kchunks;
  p.v = w.v;
  p.bm = w.m;
  p.blocks_padded = w.blocks_padded;
  switch (w.v) {
    case 16: return launch_tiles<true, 1>(p, w.type, pr.y_type, row_tiles, stream);
    case 32: return launch_tiles<true, 2>(p, w.type, pr.y_type, row_tiles, stream);
    default: return launch_tiles<true, 4>(p, w.type, pr.y_type, row_tiles, stream);
  }
}

}  // namespace sparsa::cuda
