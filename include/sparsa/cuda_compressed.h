// Decode-path GEMMs (m = 1..16) that read compressed weights directly (sparsa/codec.h):
// Y[m, N] = X[m, K] * W[N, K]^T with W packed 2:4 or V:2:M and its kept values coded int8,
// int4 or codebook4 (below), or W packed as a bitmap with fp16 values, int8 / int4 codes (groups
// of 32, 64 or 128) or codebook4 codes (dense m16n8k16 MMAs after expanding each lane's kept
// values into its A fragment; see CompressedTiled::bitmap). For 2:4 / V:2:M the values are coded
// int8, int4 (groups of 32/64/128 along K, fp16 scales, symmetric or asymmetric) or codebook4 (16
// fp16 entries per row or per tensor). X fp16, fp32 accumulation, Y fp32 or fp16.
//
// The codes are decoded to fp16 in registers, straight into the A fragments of mma.sp
// m16n8k32 (the layout of sparsa/cuda_kernels.h: weight rows on the MMA's M side, tokens on
// N); no decompressed copy of W is ever written. The GPU tiling is made on the host from the
// codec's arrays (tile_compressed). Everything one CTA reads for one K chunk (16 k-steps = 512
// columns for 2:4 with 4-bit codes, else 8 k-steps: 256 columns for 2:4, 64 blocks for V:2:M;
// V:2:M takes 8 or 16 k-steps per matrix, compressed_chunk_steps; 2:4 int8 16 on request)
// of its row group is one contiguous block: per warp (16 rows) its lanes' code words (16 bytes
// per lane and 4 k-steps of 4-bit codes or 2 of int8), the format's metadata as tile_nm24 /
// tile_vnm lay it out (512 bytes per 8 k-steps), and the
// chunk's per-group (offset, scale) half pairs; consecutive chunks follow each other, so a CTA
// streams one contiguous range. Codebooks are split into low and high bytes for byte-permute
// lookups. Built only with CUDA (SPARSA_WITH_CUDA).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "sparsa/cuda_kernels.h"

namespace sparsa {
struct CompressedMatrix;
}

namespace sparsa::cuda {

enum class CodeType : int { Int8 = 0, Int4 = 1, Codebook4 = 2, F16 = 3 };

// K steps (of 32 columns) per chunk, the default: 16 for 2:4 with 4-bit codes (3 KB per warp
// and chunk, so the per-chunk fixed work is spread over twice the bytes), 8 otherwise.
constexpr int compressed_ksteps(bool vnm, CodeType code) {
  return !vnm && (code == CodeType::Int4 || code == CodeType::Codebook4) ? 16 : 8;
}
// Chunk lengths the kernels take: the default, and 16 everywhere (V:2:M, 2:4 with int8 codes).
constexpr bool compressed_ksteps_supported(bool vnm, CodeType code, int ksteps) {
  return ksteps == compressed_ksteps(vnm, code) || (ksteps == 16 && code != CodeType::F16);
}
// The chunk length tile_compressed gives a matrix of `rows` rows (V:2:M: block length `block_m`),
// from H100 measurements (docs/compression.md, "Session 15"). V:2:M: 16 from 8192 rows up (128 or
// more row groups of 64 rows: 5-15% faster at m = 1 and 16); below, 16 for int8 codes with
// M <= 8 (64:2:8 int8 on N = 4096: 9-13% faster at m = 1 and 16) and 8 otherwise (with 64 row
// groups every group is split among 6-8 resident CTAs, and 16-step units made that split coarse:
// 4-bit codes up to 21% slower on 4096 x 11008 / 4096 x 14336, 128:2:16 int8 up to 18% at m = 16).
// 2:4: compressed_ksteps. SPARSA_COMPRESSED_CHUNK_STEPS=8 or 16 overrides the rule wherever the
// kernels take both (for A/B runs).
int compressed_chunk_steps(bool vnm, CodeType code, int64_t rows, int block_m);

// Bytes of one slot (one 16-row tile, one K chunk) of the 2:4 / V:2:M tiling: the code words
// (16 bytes a lane and 4 (4-bit) or 2 (int8) k-steps), the metadata (512 bytes per 8 k-steps)
// and the scale pairs (64 bytes per pair a row). The tiling, the device expansion and v12's
// codes variant all address slots by it.
constexpr int64_t compressed_slot_bytes(CodeType code, int ksteps, int scales_per_chunk) {
  return int64_t{code == CodeType::Int8 ? ksteps / 2 : ksteps / 4} * 512 + ksteps / 8 * 512 +
         64 * int64_t{scales_per_chunk};
}

struct CompressedTiled {
  int64_t rows = 0, cols = 0;  // the dense shape [N, K]
  int64_t rows_padded = 0;     // multiple of kRowTile
  int64_t kchunks = 0;         // chunks of `ksteps` k-steps (32 columns of 2:4 or 8 blocks each)
  int ksteps = 8;              // compressed_chunk_steps(vnm, code, rows, m)
  bool vnm = false;
  int v = 0, m = 0;                                  // V:2:M (v = 0, m = 4 for 2:4)
  int64_t blocks_padded = 0, row_groups_padded = 0;  // V:2:M
  CodeType code = CodeType::Int4;
  // int8/int4: 16 * ksteps / group size; codebook4: 0; bitmap: 1 for per-step pair words, else 0
  int scales_per_chunk = 0;
  bool per_tensor_book = false;
  int warps = 8;  // 16-row tiles per CTA row group: 8 for 2:4, 4 for V:2:M
  // [rows_padded / (16 * warps)][kchunks][warps][slot_bytes()]; a slot (one warp, one chunk):
  //   code words  [code_words()][32 lanes][16 B]: a lane's u32 for k-step s is u32 s % 4 of
  //               word s / 4 (4-bit) or u32s 2(s % 2), 2(s % 2) + 1 of word s / 2 (int8);
  //               nibble/byte order per k-step in compressed_tiling.cc
  //   metadata    [ksteps / 8][32 lanes][4] u32, each 8 k-steps as Nm24Tiled::meta / VnmTiled::meta
  //   scales      [16 rows][scales_per_chunk] (offset, scale) half pairs
  std::vector<uint8_t> tiles;
  // codebook4: [rows_padded or 1][16 low bytes, 16 high bytes]; bitmap: [rows_padded or 1][16
  // halves]
  std::vector<uint8_t> books;
  std::vector<uint32_t> columns;  // V:2:M: as VnmTiled::columns
  // Bitmap (any density; code F16, Int8 / Int4 with groups of 32, 64 or 128, Codebook4): 4 warps
  // (64 rows) per row group, chunks of 8 steps of 32 columns, each step two dense m16n8k16 MMAs
  // per token tile.
  // A slot (one warp, one chunk) has a variable size, so `offsets` gives every slot's start in
  // 16-byte units ([row groups][kchunks][warps], then the end). A slot:
  //   masks    [32 lanes] uint4: bit 16 (s % 2) + i of u32 s / 2 = the lane's A-fragment
  //            position i of step s is kept; position i: MMA i / 8 (columns 0-15 or 16-31 of
  //            the step), register r = (i / 2) % 4, half i % 2 (row g + 8 (r % 2), column
  //            16 (i / 8) + 2 t + i % 2 + 8 (r / 2) for lane 4 g + t)
  //   Int8 / Int4, groups of 128 (scales_per_chunk 0): [16 rows] uint4: (offset, scale) pairs of
  //            the row's first three groups in the chunk, then the chunk columns b1 | b2 << 16
  //            where the second and third begin (256: none)
  //   Int8 / Int4, groups of 32 / 64 (scales_per_chunk 1): [16 rows][8 steps] u16: bits 0-9 the
  //            index in the pair list (below) of the pair of the step's first kept value's
  //            group, bits 10-15 the step column (0-31; 32: none) where the next group begins
  //   values   the kept values (fp16, u8 codes, or 4-bit codes packed two per byte, low nibble
  //            first) step-major: step 0's values of lanes 0..31 (each lane's in position
  //            order), then step 1's, ...; lane L's run of step s starts after all lanes' values
  //            of steps < s and lanes < L's of step s
  //   pairs    groups of 32 / 64: at the next 4-byte boundary, each row's (offset, scale) pairs
  //            of the groups it touches in the chunk, rows in order, then one spare pair
  //   then zero padding to 16 bytes
  bool bitmap = false;
  std::vector<uint32_t> offsets;
  int64_t max_slot_bytes = 0;  // bitmap: the largest slot (the kernels' ring slot size)

  int code_words() const { return code == CodeType::Int8 ? ksteps / 2 : ksteps / 4; }
  int meta_bytes() const { return ksteps / 8 * 512; }
  int64_t slot_bytes() const { return compressed_slot_bytes(code, ksteps, scales_per_chunk); }
  // Byte offset of the slot of 16-row tile `tile`, chunk `kc`.
  int64_t slot_offset(int64_t tile, int64_t kc) const {
    return ((tile / warps * kchunks + kc) * warps + tile % warps) * slot_bytes();
  }
  // Bytes a product reads from the weights (codes, metadata, scales, codebooks, columns).
  size_t bytes() const {
    return tiles.size() + books.size() + columns.size() * 4 + offsets.size() * 4;
  }
};

// From a compressed nm 2:4 or vnm V:2:M matrix (V in 64, 128) whose codec is int8, int4 or
// codebook4 (raw codes, not `rans`). Throws sparsa::Error naming the matrix otherwise, or on
// metadata no mma.sp can express.
// Bitmap matrices: int8 or int4 codes (groups of 32, 64 or 128, sym or asym; int4 read as packed
// nibbles) and codebook4 (per channel or per tensor; `rans` codes decoded here) too.
// chunk_steps: 0 = compressed_chunk_steps's choice; else a chunk length
// compressed_ksteps_supported accepts (tests run both lengths), or sparsa::Error.
CompressedTiled tile_compressed(const CompressedMatrix& w, int chunk_steps = 0);
// An uncompressed bitmap matrix with f16 values (code F16). Throws sparsa::Error naming the
// matrix for another format or value dtype.
CompressedTiled tile_bitmap(const PackedMatrix& w);

// Dense row `row` (K floats) decoded on the host from the tiling: the reference for the
// kernels and the benchmark's check (fp16 rounding of each value as the kernels do).
std::vector<float> compressed_tiled_row(const CompressedTiled& t, int64_t row);

struct CompressedWeights {  // device pointers into an uploaded CompressedTiled
  const void* tiles = nullptr;
  const uint8_t* books = nullptr;
  const uint32_t* columns = nullptr;
  const uint32_t* offsets = nullptr;  // bitmap
  int64_t rows = 0, cols = 0, rows_padded = 0, kchunks = 0, blocks_padded = 0;
  int64_t max_slot_bytes = 0;  // bitmap
  int ksteps = 8;
  bool vnm = false, bitmap = false;
  int v = 0, m = 0;
  CodeType code = CodeType::Int4;
  int scales_per_chunk = 0;
  bool per_tensor_book = false;
};

// x: fp16 [m, ldx] (16-byte aligned, ldx % 8 == 0), m = 1..16; y: fp32 or fp16 [m, ldy].
// Workspace as for nm24_decode: zero it once before the first call.
size_t compressed_workspace_bytes(const CompressedWeights& w, int64_t m, int ctas = 0);
cudaError_t compressed_decode(const CompressedWeights& w, const GemmProblem& p,
                              cudaStream_t stream);

// 2:4 and V:2:M codes (int8, int4, codebook4) expanded on the device into the fp16 fragment
// layout of Nm24Tiled / VnmTiled (compressed_expand.cu: the same decode as the kernels above), so
// that products with more than 16 tokens run the 2:4 / V:2:M prefill kernels.
// compressed_expanded_bytes: the scratch it needs (0 for bitmap or fp16 codes: no expansion);
// expanded_*_shape: the weights it describes, without values and metadata (for workspace
// sizes; V:2:M's column table is the compressed one). expand_nm24 / expand_vnm write values
// and metadata into `scratch` (16-byte aligned) on `stream` and describe them in *out;
// cudaErrorInvalidValue for a matrix of the other kind, a bitmap or a short scratch.
size_t compressed_expanded_bytes(const CompressedWeights& w);
Nm24Weights expanded_nm24_shape(const CompressedWeights& w);
VnmWeights expanded_vnm_shape(const CompressedWeights& w);
cudaError_t expand_nm24(const CompressedWeights& w, void* scratch, size_t scratch_bytes,
                        Nm24Weights* out, cudaStream_t stream);
cudaError_t expand_vnm(const CompressedWeights& w, void* scratch, size_t scratch_bytes,
                       VnmWeights* out, cudaStream_t stream);

// v12 reading compressed 2:4 codes itself (wgmma_prefill_ssc.cu, kACodes, session 19): the row
// block's codes, metadata and scale pairs per K chunk by one bulk copy, each consumer warp
// decoding its A fragments (decode_a) before the register-A wgmma.sp; the persistent form with
// clusters of 2, sm_90a. Chunks as tile_compressed makes them by default (int8 8 k-steps, int4
// and codebook4 16); x fp16, y fp32 or fp16, workspace >= compressed_prefill_ssc_workspace_bytes()
// zeroed before the first call. cudaErrorInvalidValue for anything else, cudaErrorNotSupported
// off sm_90a.
bool compressed_prefill_ssc_supported();
size_t compressed_prefill_ssc_workspace_bytes();
// Whether a compressed product with m tokens takes compressed_prefill_ssc (cuda::gemm, bench
// gemm): 2:4 codes in their default chunks where v12 would run on the fp16 weights
// (nm24_prefill_takes_ssc_fragments), unless SPARSA_COMPRESSED_PREFILL=expand (A/B runs: the
// device expansion and the 2:4 prefill kernels instead).
bool compressed_prefill_reads_codes(const CompressedWeights& w, int64_t m);

// A compressed 2:4 / V:2:M product with more than 16 tokens, as cuda::gemm and bench gemm run it:
// compressed_prefill_ssc where compressed_prefill_reads_codes says so (scratch unused, may be
// null), else the expansion into `scratch` (compressed_expanded_bytes of it) and the 2:4 / V:2:M
// prefill kernels on it. p.workspace: compressed_prefill_workspace_bytes(w, p.m), zeroed before
// the first call. cudaErrorInvalidValue for bitmap or fp16 codes, or a short scratch.
size_t compressed_prefill_workspace_bytes(const CompressedWeights& w, int64_t m);
cudaError_t compressed_prefill(const CompressedWeights& w, const GemmProblem& p, void* scratch,
                               size_t scratch_bytes, cudaStream_t stream);
cudaError_t compressed_prefill_ssc(const CompressedWeights& w, const GemmProblem& p,
                                   cudaStream_t stream);

// Compressed products above 16 tokens reading the codes where v12 does not (session 20):
// 2:4 (wgmma_prefill_codes.cu) through the register-A wgmma.sp prefill (256-row x 128-token CTA
// tiles) whose consumer warps decode their A fragments from the row groups' slots (one bulk copy
// per K chunk) with the decode kernels' instructions, split-K as v10 where the tiles are few
// (int8 in 8-step chunks, int4 / codebook4 in 16-step chunks: tile_compressed's defaults); V:2:M
// with V = 64 / 128 (compressed_prefill_vnm_codes, wgmma_vnm_prefill.cu) through the staged
// gathered wgmma kernel with each lane's code words loaded a stage ahead and decoded at the
// stage's start (either chunk length), split-K as vnm_prefill. x fp16, y fp32 / fp16 / bf16.
// split: 0 automatic (unsplit when the workspace cannot hold the partials), 1..8 forced (a short
// workspace is then an error). compressed_prefill_takes_codes: whether compressed_prefill runs
// them for m tokens (m > 16; 2:4 where v12 does not read the codes, V:2:M where
// vnm_prefill_expands does not run it as 2:4 over the full K; not with
// SPARSA_COMPRESSED_PREFILL=expand). cudaErrorInvalidValue for other layouts or arguments,
// cudaErrorNotSupported off sm_90a.
bool compressed_prefill_codes_supported();
bool compressed_prefill_takes_codes(const CompressedWeights& w, int64_t m);
int compressed_prefill_codes_splits(const CompressedWeights& w, int64_t m, int split = 0);
size_t compressed_prefill_codes_workspace_bytes(const CompressedWeights& w, int64_t m, int split = 0);
cudaError_t compressed_prefill_codes(const CompressedWeights& w, const GemmProblem& p,
                                     cudaStream_t stream, int split = 0);
bool compressed_prefill_vnm_codes_supported(const CompressedWeights& w);
int compressed_prefill_vnm_codes_splits(const CompressedWeights& w, int64_t m, int split = 0);
cudaError_t compressed_prefill_vnm_codes(const CompressedWeights& w, const GemmProblem& p,
                                         cudaStream_t stream, int split = 0);
// The scratch compressed_prefill needs for m tokens: the expansion's, or 0 where a kernel reads
// the codes.
size_t compressed_prefill_scratch_bytes(const CompressedWeights& w, int64_t m);

struct DeviceCompressed {
  DeviceBuffer tiles, books, columns, offsets;
  CompressedWeights weights;
};
DeviceCompressed upload(const CompressedTiled& tiled);

}  // namespace sparsa::cuda
