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
  int64_t rows, groups;     // groups = ceil(cols / 4)
  int64_t vnm_ksteps, vnm_kchunks, blocks_padded;
  int v, groups_per_block;  // groups_per_block = M / 4
};

struct Group {
  uint32_t values;  // slot 0 low half, slot 1 high half
  uint32_t nibble;  // idx0 | idx1 << 2
};

constexpr uint32_t kPadNibble = 0x4;

// Group q of row r of the expanded 2:4 matrix, read off the V:2:M tiling (index math inverted
// from tiling.cc's tile_fragments: values lane 4g + t' holds blocks t' and t' + 4 of its k-step
// for rows g and g + 8; metadata lane 4g + 2(s & 1) + half holds nibbles 4 half .. 4 half + 3).
__device__ __forceinline__ Group expand_group(const ExpandArgs& a, int64_t row, int64_t q) {
  if (row >= a.rows || q >= a.groups) return {0u, kPadNibble};
  const int64_t b = q / a.groups_per_block;
  const int h = static_cast<int>(q - b * a.groups_per_block);
  const int64_t rt = row >> 4;
  const int g = static_cast<int>(row & 7), hi = static_cast<int>((row >> 3) & 1);
  const int64_t s = b >> 3;
  const int n = static_cast<int>(b & 7);
  const uint32_t pair =
      __ldg(a.values + ((rt * a.vnm_ksteps + s) * 32 + g * 4 + (n & 3)) * 4 + (hi | ((n >> 2) << 1)));
  const uint32_t word =
      __ldg(a.meta + ((rt * a.vnm_kchunks + (s >> 3)) * 32 + g * 4 + 2 * (s & 1) + (n >> 2)) * 4 +
            ((s & 7) >> 1));
  const uint32_t nib = (word >> (16 * hi + 4 * (n & 3))) & 0xfu;
  const uint32_t cols = __ldg(a.columns + (row / a.v) * a.blocks_padded + b);
  const int c0 = static_cast<int>((cols >> (8 * (nib & 3))) & 0xffu);
  const int c1 = static_cast<int>((cols >> (8 * (nib >> 2))) & 0xffu);
  const bool in0 = (c0 >> 2) == h, in1 = (c1 >> 2) == h;
  if (in0 && in1) return {pair, static_cast<uint32_t>((c0 & 3) | ((c1 & 3) << 2))};
  if (!in0 && !in1) return {0u, kPadNibble};
  const uint32_t v = in0 ? (pair & 0xffffu) : (pair >> 16);
  const uint32_t p = static_cast<uint32_t>((in0 ? c0 : c1) & 3);
  if (p < 3) return {v, p | ((p + 1) << 2)};
  return {v << 16, 2u | (3u << 2)};
}

// One thread per (16-row tile, 256-column chunk, lane) of the 2:4 tiling: the lane's 16 bytes of
// values in each of the chunk's 8 k-steps (a warp stores 512 contiguous bytes per k-step) and
// its 4 metadata words.
__global__ void vnm_expand_kernel(ExpandArgs a, uint4* __restrict__ out_values,
                                  uint4* __restrict__ out_meta, int64_t units, int64_t kchunks) {
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int lane = static_cast<int>(u & 31), g = lane >> 2, t = lane & 3;
    const int64_t kc = (u >> 5) % kchunks, rt = (u >> 5) / kchunks;
    const int64_t r0 = rt * 16 + g, r1 = r0 + 8;
    for (int j = 0; j < 8; ++j) {
      const int64_t s = kc * 8 + j, q0 = s * 8 + t, q1 = q0 + 4;
      out_values[(rt * kchunks * 8 + s) * 32 + lane] =
          make_uint4(expand_group(a, r0, q0).values, expand_group(a, r1, q0).values,
                     expand_group(a, r0, q1).values, expand_group(a, r1, q1).values);
    }
    uint32_t words[4];
    for (int j = 0; j < 4; ++j) {
      const int64_t s = kc * 8 + 2 * j + (t >> 1), first = s * 8 + 4 * (t & 1);
      uint32_t lo = 0, hi = 0;
      for (int n = 0; n < 4; ++n) {
        lo |= expand_group(a, r0, first + n).nibble << (4 * n);
        hi |= expand_group(a, r1, first + n).nibble << (4 * n);
      }
      words[j] = lo | (hi << 16);
    }
    out_meta[u] = make_uint4(words[0], words[1], words[2], words[3]);
  }
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
  if (!vnm_expandable(w) || m < kWgmmaMinM || !nm24_wgmma_supported()) return false;
  const int mode = vnm_expand_mode();
  if (mode >= 0) return mode == 1;
  return (w.m == 4 || w.m == 8) && m >= kVnmExpandMinM;
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
      reinterpret_cast<uintptr_t>(values) % 16 != 0 || reinterpret_cast<uintptr_t>(meta) % 16 != 0 ||
      w.rows <= 0 || w.cols <= 0 || w.rows_padded % 16 != 0 || w.rows_padded < w.rows ||
      w.blocks_padded % 64 != 0 || w.blocks_padded * w.m < w.cols || w.v <= 0)
    return cudaErrorInvalidValue;
  const Nm24Weights e = vnm_expanded_shape(w);
  const int64_t kchunks = e.cols_padded / kKChunk;
  ExpandArgs a;
  a.values = static_cast<const uint32_t*>(w.values);
  a.meta = w.meta;
  a.columns = w.columns;
  a.rows = w.rows;
  a.groups = (w.cols + 3) / 4;
  a.vnm_ksteps = w.blocks_padded / 8;
  a.vnm_kchunks = w.blocks_padded / 64;
  a.blocks_padded = w.blocks_padded;
  a.v = w.v;
  a.groups_per_block = w.m / 4;
  const int64_t units = e.rows_padded / 16 * kchunks * 32;
  const int64_t blocks = std::min<int64_t>((units + 255) / 256, 1 << 20);
  vnm_expand_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      a, static_cast<uint4*>(values), reinterpret_cast<uint4*>(meta), units, kchunks);
  return cudaGetLastError();
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
  e.values = buffer;
  e.meta = reinterpret_cast<const uint32_t*>(static_cast<char*>(buffer) + values_bytes);
  cudaError_t err = vnm_expand_to_nm24(w, buffer, const_cast<uint32_t*>(e.meta), stream);
  if (err == cudaSuccess) err = nm24_prefill(e, p, stream);
  const cudaError_t freed = cudaFreeAsync(buffer, stream);
  return err != cudaSuccess ? err : freed;
}

}  // namespace sparsa::cuda
