// V:2:M with M % 4 == 0 run as 2:4 over the full K (session 13, docs/kernels-gpu.md "Session 13").
//
// Why: the V:2:M prefill kernels gather each row group's kept columns of X into shared memory,
// and that gather (its write plus the wgmma's read) holds 64:2:8 at ~1.0x cuBLAS whatever the
// kernel (docs/kernels-gpu.md, "V:2:M prefill on wgmma.sp"), while the 2:4 wgmma kernel, which
// reads the dense X by TMA, runs at ~1.36x. With M % 4 == 0 every 4-column group of K lies in
// one M-column block, where a row keeps 2 values, so the same W is a valid 2:4 matrix over K. This
// file re-tiles a VnmTiled on the device into tile_nm24's fragment tiling (docs/formats.md, "GPU
// tiling") and runs nm24_prefill on it; the host twin is vnm_expand_tiling.cc.
//
// Per 2:4 group q of row r: block b = q / (M/4), sub-group h = q % (M/4). The row's two values in
// block b name kept offsets c0 < c1 (the row group's columns word, through the fixed nibble); the
// ones with c >> 2 == h land in group q at position c & 3. Two: nibble (c0 & 3) | (c1 & 3) << 2.
// One at p: (p, p + 1) with a zero second value, or (2, 3) with the zero first when p == 3 (the
// convention of tiling.cc's fix_nibble, so the host twin's tile_nm24 leaves it as is). None, or
// rows / groups past the matrix: the padding nibble (0, 1) and zeros.
#include <algorithm>
#include <cstdlib>

#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {
namespace {

struct ExpandArgs {
  const uint32_t* values;   // the VnmTiled values as 32-bit pairs (slot 0 low)
  const uint32_t* meta;     // the VnmTiled metadata words
  const uint32_t* columns;  // [row_groups_padded][blocks_padded]
  int64_t rows;
  uint32_t groups;  // ceil(cols / 4)
  int64_t vnm_ksteps, vnm_kchunks, blocks_padded;
  int v_shift;                // log2 V (V is 16, 32, 64 or 128)
  uint32_t groups_per_block;  // M / 4
  int block_shift;            // log2 (M / 4) when a power of two, else -1
};

struct Group {
  uint32_t values;  // slot 0 low half, slot 1 high half
  uint32_t nibble;  // idx0 | idx1 << 2
};

constexpr uint32_t kPadNibble = 0x4;

// Where a row g or g + 8 of a 16-row tile reads (the tile lies in one row group, as V >= 16).
struct RowPair {
  // The tile's first values / metadata word, the row group's columns.
  int64_t values, meta, columns;
  int g;
  bool valid;  // the row (g or g + 8) lies inside the matrix
};

// Group q of row g + 8 hi of the tile, read off the V:2:M tiling (index math inverted from
// tiling.cc's tile_fragments: values lane 4g + t' holds blocks t' and t' + 4 of its k-step for
// rows g and g + 8; metadata lane 4g + 2(s & 1) + half holds nibbles 4 half .. 4 half + 3). 32-bit
// arithmetic and shifts only where the pattern allows: the first version's 64-bit divisions made
// the re-tiling compute-bound (~0.6 ms for 28672 x 8192 on the H100).
__device__ __forceinline__ Group expand_group(const ExpandArgs& a, const RowPair& r, int hi,
                                              uint32_t q) {
  if (!r.valid || q >= a.groups) return {0u, kPadNibble};
  const uint32_t b = a.block_shift >= 0 ? q >> a.block_shift : q / a.groups_per_block;
  const uint32_t h = q - b * a.groups_per_block;
  const uint32_t s = b >> 3, n = b & 7;
  const uint32_t pair =
      __ldg(a.values + r.values + s * 128 + (r.g * 4 + (n & 3)) * 4 + (hi | ((n >> 2) << 1)));
  const uint32_t word = __ldg(a.meta + r.meta + (s >> 3) * 128 +
                              (r.g * 4 + 2 * (s & 1) + (n >> 2)) * 4 + ((s & 7) >> 1));
  const uint32_t nib = (word >> (16 * hi + 4 * (n & 3))) & 0xfu;
  const uint32_t cols = __ldg(a.columns + r.columns + b);
  const uint32_t c0 = (cols >> (8 * (nib & 3))) & 0xffu, c1 = (cols >> (8 * (nib >> 2))) & 0xffu;
  const bool in0 = (c0 >> 2) == h, in1 = (c1 >> 2) == h;
  if (in0 && in1) return {pair, (c0 & 3) | ((c1 & 3) << 2)};
  if (!in0 && !in1) return {0u, kPadNibble};
  const uint32_t v = in0 ? (pair & 0xffffu) : (pair >> 16);
  const uint32_t p = (in0 ? c0 : c1) & 3;
  if (p < 3) return {v, p | ((p + 1) << 2)};
  return {v << 16, 2u | (3u << 2)};
}

// A CTA expands (16-row tile, 256-column chunk) pieces of the 2:4 tiling, one at a time. Each of
// the tile's 16 x 64 groups is expanded once into shared memory (the first version computed every
// group twice, once for the values and once for the metadata, and ran compute-bound: 37 us for
// 4096 x 4096 on the H100), then the lanes' 16-byte value fragments (a warp stores 512 contiguous
// bytes per k-step) and metadata words are assembled from there. Rows are 68 words apart so that
// the 32 lanes of a fragment read (rows g, groups 8j + t) hit 32 different banks.
constexpr int kExpandThreads = 256;  // 4 of a tile's 1024 groups per thread
constexpr int kRowStride = 68;

// From a tile's expanded groups in shared memory ([16 rows][kRowStride], groups 0..63 of the
// chunk) to tile_nm24's layout: the lanes' 16-byte value fragments of the chunk's 8 k-steps (a
// warp stores 512 contiguous bytes per k-step), then the 128 metadata words.
template <int kThreads>
__device__ __forceinline__ void store_tile(const uint32_t* values, const uint8_t* nibbles,
                                           int64_t tile, uint4* __restrict__ out_values,
                                           uint32_t* __restrict__ out_meta) {
#pragma unroll
  for (int k = 0; k < (256 + kThreads - 1) / kThreads; ++k) {  // values: k-step j x lane
    const int u = threadIdx.x + k * kThreads;
    if (kThreads * (k + 1) > 256 && u >= 256) break;
    const int j = u >> 5, lane = u & 31, g = lane >> 2, t = lane & 3;
    const uint32_t* lo = values + g * kRowStride + j * 8 + t;
    const uint32_t* hi = lo + 8 * kRowStride;
    out_values[(tile * 8 + j) * 32 + lane] = make_uint4(lo[0], hi[0], lo[4], hi[4]);
  }
#pragma unroll
  for (int k = 0; k < (128 + kThreads - 1) / kThreads; ++k) {  // metadata: word w of lane l,
    const int u = threadIdx.x + k * kThreads;                  // 4 groups of rows g and g + 8
    if (kThreads * (k + 1) > 128 && u >= 128) break;
    const int lane = u >> 2, w = u & 3, g = lane >> 2, t = lane & 3;
    const int first = (2 * w + (t >> 1)) * 8 + 4 * (t & 1);
    uint32_t word = 0;
    for (int n = 0; n < 4; ++n) {
      word |= static_cast<uint32_t>(nibbles[g * kRowStride + first + n]) << (4 * n);
      word |= static_cast<uint32_t>(nibbles[(g + 8) * kRowStride + first + n]) << (16 + 4 * n);
    }
    out_meta[tile * 128 + u] = word;
  }
}

// Any M % 4 == 0: one expand_group per group of the tile (4 per thread).
__global__ void __launch_bounds__(kExpandThreads)
    vnm_expand_kernel(ExpandArgs a, uint4* __restrict__ out_values, uint32_t* __restrict__ out_meta,
                      int64_t tiles, int64_t kchunks) {
  __shared__ uint32_t values[16 * kRowStride];
  __shared__ uint8_t nibbles[16 * kRowStride];
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const uint32_t tile32 = static_cast<uint32_t>(tile), kchunks32 = static_cast<uint32_t>(kchunks);
    const int64_t rt = tile32 / kchunks32, kc = tile32 - static_cast<uint32_t>(rt) * kchunks32;
    RowPair r;  // the tile's bases; per row only g and whether it lies inside the matrix
    r.values = rt * a.vnm_ksteps * 128;
    r.meta = rt * a.vnm_kchunks * 128;
    r.columns = ((rt * 16) >> a.v_shift) * a.blocks_padded;
    Group e[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {  // all loads of the thread's 4 groups in flight together
      const int i = threadIdx.x + k * kExpandThreads, row = i >> 6;
      r.g = row & 7;
      r.valid = rt * 16 + row < a.rows;
      e[k] = expand_group(a, r, row >> 3, static_cast<uint32_t>(kc * 64 + (i & 63)));
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int i = threadIdx.x + k * kExpandThreads, at = (i >> 6) * kRowStride + (i & 63);
      values[at] = e[k].values;
      nibbles[at] = static_cast<uint8_t>(e[k].nibble);
    }
    __syncthreads();
    store_tile<kExpandThreads>(values, nibbles, tile, out_values, out_meta);
    __syncthreads();
  }
}

// How a block's value pair lands in its group h, for kept offsets c0 < c1 (the conventions of the
// header): the byte selector of `prmt(pair, 0, selector)` (bytes 4-7 are the zero operand) in
// the low half, the group's nibble in bits 16-19.
__device__ __forceinline__ uint32_t route(uint32_t c0, uint32_t c1, uint32_t h) {
  const bool in0 = (c0 >> 2) == h, in1 = (c1 >> 2) == h;
  if (in0 && in1) return 0x3210u | (((c0 & 3) | ((c1 & 3) << 2)) << 16);
  if (!in0 && !in1) return 0x4444u | (kPadNibble << 16);
  const uint32_t p = (in0 ? c0 : c1) & 3, kept = in0 ? 0x10u : 0x32u;  // the kept value's bytes
  if (p < 3) return (0x4400u | kept) | ((p | ((p + 1) << 2)) << 16);   // kept low, zero high
  return ((kept << 8) | 0x44u) | ((2u | (3u << 2)) << 16);             // zero low, kept at 3
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t selector) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(selector));
  return d;
}

// M = 4 kGpb in {4, 8, 16} (v5): one thread per (row pair g / g + 8, block) of a tile. Rows g and
// g + 8 share the block's metadata word and columns word and hold adjacent value pairs, so three
// loads (one 64-bit) serve both; each group is then a table lookup (`route`, per CTA in shared
// memory, indexed by the two kept offsets) and one byte permute. v4 (one (row, block) item at a
// time, the routing computed per group) issued ~50 instructions per group and was
// instruction-bound (ncu, 28672 x 8192: SM 88% busy, DRAM 46%).
template <int kGpb>
__global__ void __launch_bounds__(8 * 64 / kGpb)
    vnm_expand_blocks_kernel(ExpandArgs a, uint4* __restrict__ out_values,
                             uint32_t* __restrict__ out_meta, int64_t tiles, int64_t kchunks) {
  constexpr int kM = 4 * kGpb, kBlocksPerRow = 64 / kGpb, kThreads = 8 * kBlocksPerRow;
  constexpr int kRoutes = kM * kM * kGpb;
  __shared__ uint32_t routes[kRoutes];
  __shared__ uint32_t values[16 * kRowStride];
  __shared__ uint8_t nibbles[16 * kRowStride];
  for (int e = threadIdx.x; e < kRoutes; e += kThreads)
    routes[e] = route(static_cast<uint32_t>(e / (kM * kGpb)),
                      static_cast<uint32_t>((e / kGpb) % kM), static_cast<uint32_t>(e % kGpb));
  __syncthreads();
  const int g = threadIdx.x / kBlocksPerRow, bb = threadIdx.x % kBlocksPerRow;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const uint32_t tile32 = static_cast<uint32_t>(tile), kchunks32 = static_cast<uint32_t>(kchunks);
    const uint32_t rt = tile32 / kchunks32, kc = tile32 - rt * kchunks32;
    // Unpredicated loads: the padded tiling covers every row of the tile and every block of the
    // chunk (blocks_padded * M >= K rounded up to 256); what lies past the matrix is dropped below.
    const uint32_t b = kc * kBlocksPerRow + bb, s = b >> 3, n = b & 7;
    const uint2 pairs = __ldg(reinterpret_cast<const uint2*>(
        a.values + rt * a.vnm_ksteps * 128 + (s * 128 + (g * 4 + (n & 3)) * 4 + ((n >> 2) << 1))));
    const uint32_t word =
        __ldg(a.meta + rt * a.vnm_kchunks * 128 +
              ((s >> 3) * 128 + (g * 4 + 2 * (s & 1) + (n >> 2)) * 4 + ((s & 7) >> 1)));
    const uint32_t cols =
        __ldg(a.columns + ((int64_t{rt} * 16) >> a.v_shift) * a.blocks_padded + b);
    const int64_t rows_left = a.rows - int64_t{rt} * 16;
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int row = g + 8 * hi;
      const uint32_t pair = hi ? pairs.y : pairs.x;
      const uint32_t nib = (word >> (16 * hi + 4 * (n & 3))) & 0xfu;
      const uint32_t c0 = (cols >> (8 * (nib & 3))) & (kM - 1),
                     c1 = (cols >> (8 * (nib >> 2))) & (kM - 1);
      const uint32_t* route_of = routes + (c0 * kM + c1) * kGpb;
#pragma unroll
      for (int h = 0; h < kGpb; ++h) {
        const uint32_t r = route_of[h];
        const bool inside = row < rows_left && b * kGpb + h < a.groups;
        const int at = row * kRowStride + bb * kGpb + h;
        values[at] = inside ? prmt(pair, 0u, r) : 0u;
        nibbles[at] = static_cast<uint8_t>(inside ? r >> 16 : kPadNibble);
      }
    }
    __syncthreads();
    store_tile<kThreads>(values, nibbles, tile, out_values, out_meta);
    __syncthreads();
  }
}

void launch_expand(int m, unsigned blocks, unsigned table_blocks, cudaStream_t stream,
                   const ExpandArgs& a, uint4* values, uint32_t* meta, int64_t tiles,
                   int64_t kchunks) {
  switch (m) {  // the patterns whose blocks tile a 256-column chunk exactly
    case 4:
      vnm_expand_blocks_kernel<1>
          <<<table_blocks, 512, 0, stream>>>(a, values, meta, tiles, kchunks);
      break;
    case 8:
      vnm_expand_blocks_kernel<2>
          <<<table_blocks, 256, 0, stream>>>(a, values, meta, tiles, kchunks);
      break;
    case 16:
      vnm_expand_blocks_kernel<4>
          <<<table_blocks, 128, 0, stream>>>(a, values, meta, tiles, kchunks);
      break;
    default:
      vnm_expand_kernel<<<blocks, kExpandThreads, 0, stream>>>(a, values, meta, tiles, kchunks);
  }
}

int log2_exact(int64_t x) {
  for (int k = 0; k < 31; ++k)
    if (x == (int64_t{1} << k)) return k;
  return -1;
}

// SPARSA_VNM_EXPAND: "0" never, "1" wherever the path runs, unset / anything else: the rule.
int vnm_expand_mode() {
  static const int mode = [] {
    const char* v = std::getenv("SPARSA_VNM_EXPAND");
    if (!v || !*v) return -1;
    return v[0] == '0' ? 0 : v[0] == '1' ? 1 : -1;
  }();
  return mode;
}

}  // namespace

bool vnm_expandable(const VnmWeights& w) { return w.m >= 4 && w.m % 4 == 0; }

bool vnm_prefill_expands(const VnmWeights& w, int64_t m) {
  if (!vnm_expandable(w) || m < vnm_wgmma_min_m() || w.prefill_values || !nm24_wgmma_supported())
    return false;
  const int mode = vnm_expand_mode();
  if (mode >= 0) return mode == 1;
  return w.m == 8 && m >= kVnmExpandMinM;
}

bool vnm_prefill_copy_held(const VnmWeights& w, int64_t m) {
  return w.prefill_values && w.prefill_meta && m >= kVnmCopyMinM && vnm_expandable(w) &&
         nm24_wgmma_supported();
}

Nm24Weights vnm_expanded_shape(const VnmWeights& w) {
  Nm24Weights e;
  e.rows = w.rows;
  e.cols = w.cols;
  e.rows_padded = w.rows_padded;
  e.cols_padded = (w.cols + kKChunk - 1) / kKChunk * kKChunk;
  e.type = w.type;
  return e;
}

size_t vnm_expanded_values_bytes(const VnmWeights& w) {
  const Nm24Weights e = vnm_expanded_shape(w);
  return static_cast<size_t>(e.rows_padded) * static_cast<size_t>(e.cols_padded);  // 2 B x K / 2
}

size_t vnm_expanded_meta_bytes(const VnmWeights& w) {
  const Nm24Weights e = vnm_expanded_shape(w);
  return static_cast<size_t>(e.rows_padded / 16) * static_cast<size_t>(e.cols_padded / kKChunk) *
         32 * 4 * sizeof(uint32_t);
}

cudaError_t vnm_expand_to_nm24(const VnmWeights& w, void* values, uint32_t* meta,
                               cudaStream_t stream) {
  if (!vnm_expandable(w) || !w.values || !w.meta || !w.columns || !values || !meta ||
      reinterpret_cast<uintptr_t>(values) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(meta) % 16 != 0 || w.rows <= 0 || w.cols <= 0 ||
      w.rows_padded % 16 != 0 || w.rows_padded < w.rows || w.blocks_padded % 64 != 0 ||
      w.blocks_padded * w.m < w.cols || w.v < 16 || log2_exact(w.v) < 0 ||
      w.cols > (int64_t{1} << 31) ||
      w.rows_padded / 16 * ((w.cols + kKChunk - 1) / kKChunk) >=
          (int64_t{1} << 31))  // 32-bit tile ids
    return cudaErrorInvalidValue;
  const Nm24Weights e = vnm_expanded_shape(w);
  const int64_t kchunks = e.cols_padded / kKChunk;
  ExpandArgs a;
  a.values = static_cast<const uint32_t*>(w.values);
  a.meta = w.meta;
  a.columns = w.columns;
  a.rows = w.rows;
  a.groups = static_cast<uint32_t>((w.cols + 3) / 4);
  a.vnm_ksteps = w.blocks_padded / 8;
  a.vnm_kchunks = w.blocks_padded / 64;
  a.blocks_padded = w.blocks_padded;
  a.v_shift = log2_exact(w.v);
  a.groups_per_block = static_cast<uint32_t>(w.m / 4);
  a.block_shift = log2_exact(w.m / 4);
  const int64_t tiles = e.rows_padded / 16 * kchunks;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(tiles, 1 << 20));
  // The table kernels build their route table once per CTA: a few thousand CTAs, several tiles
  // each.
  const unsigned table_blocks = static_cast<unsigned>(std::min<int64_t>(tiles, 4096));
  launch_expand(w.m, blocks, table_blocks, stream, a, static_cast<uint4*>(values), meta, tiles,
                kchunks);
  return cudaGetLastError();
}

// The held copy's weights (or a shape without pointers when there is none).
Nm24Weights vnm_held_copy(const VnmWeights& w) {
  Nm24Weights e = vnm_expanded_shape(w);
  e.values = w.prefill_values;
  e.meta = w.prefill_meta;
  return e;
}

// The re-tiled weights live in a stream-ordered temporary for the one call (as the Xᵀ path's
// transpose does), so the call's time includes the re-tiling and no memory is held between calls.
cudaError_t vnm_prefill_expanded(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream) {
  if (!vnm_expandable(w)) return cudaErrorInvalidValue;
  Nm24Weights e = vnm_expanded_shape(w);
  const size_t values_bytes = vnm_expanded_values_bytes(w);
  void* buffer = nullptr;
  if (cudaError_t err = cudaMallocAsync(&buffer, values_bytes + vnm_expanded_meta_bytes(w), stream);
      err != cudaSuccess)
    return err;
  // Fragments, so nm24_prefill runs its default kernels on it (v12 from 512 tokens, session 17;
  // the register-A kernel with split-K below), as for the held copy. Row-major values for the shared-memory-A kernel measured level
  // with it (session 13, `-session13-final-ss` against `-session13-final`), so that variant went.
  uint32_t* meta = reinterpret_cast<uint32_t*>(static_cast<char*>(buffer) + values_bytes);
  e.values = buffer;
  e.meta = meta;
  cudaError_t err = vnm_expand_to_nm24(w, buffer, meta, stream);
  if (err == cudaSuccess) err = nm24_prefill(e, p, stream);
  const cudaError_t freed = cudaFreeAsync(buffer, stream);
  return err != cudaSuccess ? err : freed;
}

}  // namespace sparsa::cuda
