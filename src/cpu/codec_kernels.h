// Fused kernels Y = X * W^T over compressed weights (sparsa/codec.h): they read the codes,
// scales and format metadata directly and never write decoded weights to memory.
//
// Combinations: format {dense, nm 2:4, bitmap, vnm V:2:M} x codec {int8 sym, int8 asym, int4
// sym/asym, codebook4 (per channel or per tensor, raw codes)}. Every one has the scalar reference twin
// (src/cpu/reference/codec_gemm_reference.cc) and a Highway kernel (src/cpu/simd/codec_gemm.cc).
// src/cpu/codec_gemm.cc checks the arrays and fills CodecKernelArgs.
#pragma once

#include <cstdint>
#include <vector>

#include "sparsa/codec.h"

namespace sparsa::cpu {

enum class CodeKind : uint8_t {
  Int8Signed,    // int8 sym: I8 codes, zero-point 0
  Int8Unsigned,  // int8 asym: U8 codes, zero-points per group
  Int4,          // int4: nibbles, zero-point 8 (sym) or per group (asym)
  Codebook4,     // nibbles indexing 16 fp16 entries (per row or one table)
};

struct CodecKernelArgs {
  // Y[m, rows] = X[m, cols] * W^T
  const float* x = nullptr;  // [m, ldx]
  int64_t m = 0, ldx = 0;
  float* y = nullptr;  // [m, ldy]
  int64_t ldy = 0;
  int64_t rows = 0, cols = 0;

  FormatKind format = FormatKind::Dense;  // Dense, NM (2:4) or Bitmap
  CodeKind code = CodeKind::Int8Signed;
  int group_size = 128;
  const uint8_t* codes = nullptr;
  uint64_t code_bytes = 0;
  const uint16_t* scales = nullptr;    // fp16 per group (int codes)
  const uint8_t* zeros = nullptr;      // per group, or null: zero_point for every group
  int zero_point = 0;                  // 0 (int8 sym) or 8 (int4 sym)
  const uint16_t* codebook = nullptr;  // fp16 [16] per row (per_channel) or [16]
  bool per_channel = true;

  // Format metadata.
  int64_t values_per_row = 0;                // dense: cols; nm 2:4: 2 * ceil(cols / 4)
  const uint32_t* nm_meta = nullptr;         // nm 2:4: U32 words, 16 values per word
  int64_t nm_words_per_row = 0;
  const int64_t* row_ptr = nullptr;          // bitmap: first value of each row
  const uint64_t* bitmap = nullptr;          // bitmap: words, 64 columns each
  int64_t bitmap_words_per_row = 0;
  const int64_t* group_ptr = nullptr;        // bitmap: first group of each row
  // vnm V:2:M (values and metadata as nm 2:4 over 4 * vnm_col_blocks gathered columns):
  // the 4 kept column offsets of each V x M block, U8[ceil(rows / V) * col_blocks * 4].
  const uint8_t* vnm_columns = nullptr;
  int64_t vnm_v = 0, vnm_m = 0, vnm_col_blocks = 0;

  // X copied with zeros up to kp >= cols, so padded columns (nm offsets, bitmap chunks past K)
  // read 0. [m, kp].
  const float* xp = nullptr;
  int64_t kp = 0;
};

void codec_gemm_reference(const CodecKernelArgs& args);
// vnm: per row block, X's kept columns gathered (4 per M-column block, zero past cols) and the
// block's rows run as nm 2:4 rows over them (vnm_block_args).
void codec_gemm_simd(const CodecKernelArgs& args);

// vnm: padded row length of one row block's gathered X, and the nm 2:4 arguments of row block
// `rb` reading `xsel` ([m, vnm_gathered_kp(a)], filled here from a.xp).
int64_t vnm_gathered_kp(const CodecKernelArgs& a);
CodecKernelArgs vnm_block_args(const CodecKernelArgs& a, int64_t rb, float* xsel);
// The two halves of vnm_block_args: X's kept columns of row block `rb` into `xsel`, and the
// block's nm 2:4 arguments with x / xp left null (the caller supplies its gathered X).
void vnm_gather_x(const CodecKernelArgs& a, int64_t rb, float* xsel);
CodecKernelArgs vnm_block_view(const CodecKernelArgs& a, int64_t rb);

// Integer activations (CompressedGemmOptions::int8_activations), dense, nm 2:4, bitmap or vnm
// (as 2:4 over each row block's gathered X, quantised per 32 gathered columns) with
// int8 / int4 / codebook4 codes. X (a.xp, [m, kp]) is quantised per kXGroup columns to int8 with an f32 scale:
// s = max|x| / 127, q = round-to-nearest-even(x * (127 / max|x|)) (0 for an all-zero block).
// Y = sum over the (32-column block b, weight group g) pairs of the row's values of
// float(I_bg) * (scale_w(g) * s_b), I_bg the exact integer sum of (code - zero) * q over the
// values in block b and group g (dense and 2:4: one group per block; bitmap groups count values,
// so a block can hold two). The reference twin sums the terms
// in double; src/cpu/simd/codec_gemm_x8.cc (VNNI) in f32 lanes.
inline constexpr int64_t kXGroup = 32;
// codebook4 under int8 activations: each codebook (16 f16 entries) is quantised the same way,
// q = round-half-even(c * 127 / max|c|), and its scale max|c| / 127 is returned.
float codebook_int8(const uint16_t* f16, int8_t q[16]);
void codec_gemm_x8_reference(const CodecKernelArgs& args);
void codec_gemm_x8_simd(const CodecKernelArgs& args);

}  // namespace sparsa::cpu
