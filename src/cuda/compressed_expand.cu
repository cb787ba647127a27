// Compressed 2:4 and V:2:M weights (int8, int4, codebook4 codes in the decode tiling,
// tile_compressed) to the fp16 fragment layout the uncompressed kernels read (Nm24Tiled /
// VnmTiled: values and metadata; V:2:M keeps the tiling's column table, the same array), on the
// device. Why: the compressed decode kernels serve m <= 16, and above that prefill kernels read
// the codes themselves on sm_90a (2:4: wgmma_prefill_codes.cu below 512 tokens, v12's codes
// variant from there; V:2:M: the staged gathered kernel; sessions 19-20). The products they do
// not take (V:2:M with M = 8 from 2048 tokens, which runs as 2:4 over the full K; int8 2:4 in
// 16-step chunks; devices without sm_90a) run the 2:4 or V:2:M prefill kernels on a transient
// fp16 copy expanded by this kernel right before them: one pass over the weights (codes read, 2
// bytes per kept value written) instead of one decode call per 16 tokens. Each lane decodes its
// A fragment with the decode kernels' instructions, so every path multiplies the same fp16
// weights.
#include <cuda_fp16.h>

#include "cuda/compressed_common.cuh"
#include "cuda/slot_layout.cuh"
#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

struct ExpandParams {
  const unsigned char* tiles;  // the decode tiling's slots
  const uint4* books;          // codebook4: [rows or 1][2 uint4]
  uint4* values;               // [rows_padded / 16][ksteps_total][32 lanes] uint4
  uint4* meta;                 // [rows_padded / 16][ksteps_total / 8][32 lanes] uint4
  // (ksteps_total = kchunks * ksteps: cols_padded / 32 for 2:4, blocks_padded / 8 for V:2:M)
  int64_t slot_bytes, kchunks, row_tiles, rows;
  int ksteps, warps, spc, book_rows;
};

// One warp per (16-row tile, K chunk): its slot's code words, metadata and scale pairs in, the
// chunk's fragments and metadata out (a k-step: 32 columns of 2:4, 8 blocks of V:2:M).
template <CodeType kCode>
__global__ void __launch_bounds__(256) expand_kernel(const ExpandParams p) {
  const int64_t unit = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (unit >= p.row_tiles * p.kchunks) return;
  const int lane = threadIdx.x % 32, g8 = lane / 4;
  const int64_t tile = unit / p.kchunks, kc = unit % p.kchunks;
  const unsigned char* slot =
      p.tiles + ((tile / p.warps * p.kchunks + kc) * p.warps + tile % p.warps) * p.slot_bytes;
  const SlotLayout<kCode> layout{SlotLayout<kCode>::shift_of(p.ksteps), p.spc};
  const int64_t ksteps_total = p.kchunks * p.ksteps;
  for (int j = 0; j < p.ksteps / 8; ++j)  // the metadata, 8 k-steps per 16-byte word
    p.meta[(tile * (ksteps_total / 8) + kc * (p.ksteps / 8) + j) * 32 + lane] =
        __ldg(reinterpret_cast<const uint4*>(slot + layout.meta(8 * j, lane)));
  Book b0{}, b1{};
  if constexpr (kCode == CodeType::Codebook4) {
    const int64_t row = tile * 16 + g8;
    b0 = load_book(p.books, row < p.rows ? row : p.rows - 1, p.book_rows);
    b1 = load_book(p.books, row + 8 < p.rows ? row + 8 : p.rows - 1, p.book_rows);
  }
  const auto load = [slot](uint32_t offset) { return __ldg(reinterpret_cast<const uint32_t*>(slot + offset)); };
  uint4* out = p.values + (tile * ksteps_total + kc * p.ksteps) * 32 + lane;
  for (int s = 0; s < p.ksteps; ++s) {
    uint32_t a[4];
    decode_slot_kstep<kCode>(a, layout, load, s, lane, b0, b1);
    out[s * 32] = make_uint4(a[0], a[1], a[2], a[3]);
  }
}

}  // namespace

size_t compressed_expanded_bytes(const CompressedWeights& w) {
  if (w.bitmap || w.code == CodeType::F16) return 0;
  const int64_t row_tiles = w.rows_padded / 16, ksteps_total = w.kchunks * w.ksteps;
  return static_cast<size_t>(row_tiles * ksteps_total * 512 +        // values: 16 B a lane
                             row_tiles * (ksteps_total / 8) * 512);  // metadata per 8 k-steps
}

Nm24Weights expanded_nm24_shape(const CompressedWeights& w) {
  Nm24Weights out;
  out.rows = w.rows;
  out.cols = w.cols;
  out.rows_padded = w.rows_padded;
  out.cols_padded = w.kchunks * w.ksteps * 32;
  out.type = ElemType::F16;
  return out;
}

VnmWeights expanded_vnm_shape(const CompressedWeights& w) {
  VnmWeights out;
  out.columns = w.columns;
  out.rows = w.rows;
  out.cols = w.cols;
  out.rows_padded = w.rows_padded;
  out.blocks_padded = w.blocks_padded;
  out.row_groups_padded = (w.rows_padded + w.v - 1) / w.v;
  out.v = w.v;
  out.m = w.m;
  out.type = ElemType::F16;
  return out;
}

namespace {

// Launches the expansion into scratch; the values' and metadata's device addresses out.
cudaError_t expand(const CompressedWeights& w, void* scratch, size_t scratch_bytes,
                   const void** values, const uint32_t** meta, cudaStream_t stream) {
  const size_t need = compressed_expanded_bytes(w);
  if (need == 0 || !scratch || scratch_bytes < need ||
      reinterpret_cast<uintptr_t>(scratch) % 16 != 0 || w.ksteps % 8 != 0)
    return cudaErrorInvalidValue;
  ExpandParams p{};
  p.tiles = static_cast<const unsigned char*>(w.tiles);
  p.books = reinterpret_cast<const uint4*>(w.books);
  p.values = static_cast<uint4*>(scratch);
  p.kchunks = w.kchunks;
  p.row_tiles = w.rows_padded / 16;
  p.meta = p.values + p.row_tiles * p.kchunks * w.ksteps * 32;
  p.rows = w.rows;
  p.ksteps = w.ksteps;
  p.warps = w.vnm ? 4 : 8;  // 16-row tiles per row group (CompressedTiled::warps)
  p.spc = w.scales_per_chunk;
  p.book_rows = w.per_tensor_book ? 0 : 1;
  p.slot_bytes = compressed_slot_bytes(w.code, w.ksteps, w.scales_per_chunk);
  const int64_t warps = p.row_tiles * p.kchunks;
  const dim3 grid(static_cast<unsigned>((warps + 7) / 8));
  switch (w.code) {
    case CodeType::Int8:
      expand_kernel<CodeType::Int8><<<grid, 256, 0, stream>>>(p);
      break;
    case CodeType::Int4:
      expand_kernel<CodeType::Int4><<<grid, 256, 0, stream>>>(p);
      break;
    default:
      expand_kernel<CodeType::Codebook4><<<grid, 256, 0, stream>>>(p);
      break;
  }
  *values = p.values;
  *meta = reinterpret_cast<const uint32_t*>(p.meta);
  return cudaGetLastError();
}

}  // namespace

cudaError_t expand_nm24(const CompressedWeights& w, void* scratch, size_t scratch_bytes,
                        Nm24Weights* out, cudaStream_t stream) {
  if (!out || w.vnm) return cudaErrorInvalidValue;
  *out = expanded_nm24_shape(w);
  return expand(w, scratch, scratch_bytes, &out->values, &out->meta, stream);
}

cudaError_t expand_vnm(const CompressedWeights& w, void* scratch, size_t scratch_bytes,
                       VnmWeights* out, cudaStream_t stream) {
  if (!out || !w.vnm) return cudaErrorInvalidValue;
  *out = expanded_vnm_shape(w);
  return expand(w, scratch, scratch_bytes, &out->values, &out->meta, stream);
}

size_t compressed_prefill_scratch_bytes(const CompressedWeights& w, int64_t m) {
  return compressed_prefill_reads_codes(w, m) || compressed_prefill_takes_codes(w, m)
             ? 0
             : compressed_expanded_bytes(w);
}

size_t compressed_prefill_workspace_bytes(const CompressedWeights& w, int64_t m) {
  if (compressed_expanded_bytes(w) == 0) return 0;
  if (compressed_prefill_reads_codes(w, m)) return compressed_prefill_ssc_workspace_bytes();
  if (compressed_prefill_takes_codes(w, m)) return compressed_prefill_codes_workspace_bytes(w, m);
  return w.vnm ? vnm_workspace_bytes(expanded_vnm_shape(w), m)
               : nm24_workspace_bytes(expanded_nm24_shape(w), m);
}

cudaError_t compressed_prefill(const CompressedWeights& w, const GemmProblem& p, void* scratch,
                               size_t scratch_bytes, cudaStream_t stream) {
  if (compressed_expanded_bytes(w) == 0) return cudaErrorInvalidValue;
  if (compressed_prefill_reads_codes(w, p.m)) return compressed_prefill_ssc(w, p, stream);
  if (compressed_prefill_takes_codes(w, p.m)) return compressed_prefill_codes(w, p, stream);
  if (w.vnm) {
    VnmWeights e;
    const cudaError_t s = expand_vnm(w, scratch, scratch_bytes, &e, stream);
    return s != cudaSuccess ? s : vnm_gemm(e, p, stream);
  }
  Nm24Weights e;
  const cudaError_t s = expand_nm24(w, scratch, scratch_bytes, &e, stream);
  return s != cudaSuccess ? s : nm24_gemm(e, p, stream);
}

}  // namespace sparsa::cuda
