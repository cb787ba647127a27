// Codecs over a packed matrix's value array: fewer bytes per kept weight, format untouched.
//
// A codec replaces the packed matrix's "values" array (dense, csr, bsr, bitmap, nm or vnm alike)
// by its own named arrays, in the values array's place; the format's metadata arrays (row
// pointers, bitmaps, N:M offsets) are kept as they are. The result is still a set of named arrays
// plus the codec's parameters, so the .sparsa container stores it like any packed matrix.
//
// Value segments and groups. The values of every format are seen as a sequence of segments:
// one per matrix row for dense, csr, bitmap, nm and vnm (a row's kept values in the format's
// order: ascending column for dense/csr/bitmap, group by group for nm/vnm), one per block row
// for bsr (its blocks' values, block after block). Quantisation groups of G values (32, 64 or
// 128) run along each segment from its start; the last group of a segment may be shorter, and
// no group spans two segments. Group g of segment s has index group_ptr[s] + g, where
// group_ptr[s] is the sum of ceil(len/G) over the segments before s.
//
// Codec arrays (n = number of values, codes indexed by the value's position in "values"):
//   int8 sym   codes I8[n]  q in [-127, 127], v = scale * q
//   int8 asym  codes U8[n]  q in [0, 255],    v = scale * (q - zero)
//   int4 sym   codes U8[ceil(n/2)]: value i in byte i/2, low nibble when i is even; nibble
//              u = q + 8, q in [-7, 7], v = scale * q
//   int4 asym  codes as int4 sym with u = q in [0, 15], v = scale * (q - zero)
//              scales F16[groups], rounded up, so |v - v'| <= scale/2 for every value;
//              asym also zeros U8[groups], the integer zero-point: the grid spans
//              [min(min, 0), max(max, 0)], so zeros (pruned, padded) stay exactly zero
//   codebook4  codes U8[ceil(n/2)] nibbles as int4; codebook F16[books*16]
//   codebook8  codes U8[n]; codebook F16[books*256]
//              books = 1 (per tensor) or one per segment (per output channel); each codebook
//              ascending. With the `rans` option the codes are one rANS stream "codes_rans" U8.
//   lossless   exponents U8 (rANS stream of each value's exponent field: 8 bits for bf16/f32,
//              5 for f16; stream version 2 with the `gpu` option), sign_mantissa U8 (the rest, raw, LSB-first bit-packed: 8 bits per
//              bf16, 11 per f16, 24 per f32). Bit-exact.
//   zstd       values_zstd U8 (one zstd frame of the values array's bytes). Bit-exact.
// The rANS stream layout is written in docs/compression.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparsa/format.h"
#include "sparsa/kernels.h"

namespace sparsa {

enum class CodecKind { Lossless, Zstd, Int8, Int4, Codebook4, Codebook8 };

struct CodecParams {
  CodecKind kind = CodecKind::Int8;
  // int8 / int4
  int group_size = 128;  // 32, 64 or 128 values per scale
  bool symmetric = true;
  // codebook4 / codebook8
  bool per_channel = true;  // one codebook per segment (row), else one for the tensor
  bool entropy = false;     // rANS-code the indices (storage only: the fused kernels need raw)
  int iterations = 100;     // Lloyd iterations at most (stops earlier when assignments settle)
  uint64_t seed = 0;        // k-means++ seeding
  // zstd
  int zstd_level = 3;
  // lossless: `gpu` writes the exponents as a version-2 rANS stream (32 states per chunk, one
  // per warp lane; see docs/compression.md), which the CUDA decoder (sparsa/cuda_rans.h) reads.
  bool gpu_stream = false;

  // "int8", "int4:g64:asym", "codebook4:tensor:seed=3", "codebook8:rans", "lossless",
  // "lossless:gpu", "zstd:l19". Throws sparsa::Error naming the spec and the bad option.
  static CodecParams parse(std::string_view spec);
  // The canonical spec: the codec name plus every option that differs from its default.
  std::string to_string() const;
  bool operator==(const CodecParams&) const = default;
};

struct CompressedMatrix {
  // The format's header and metadata arrays; "values" replaced by the codec's arrays.
  PackedMatrix packed;
  CodecParams codec;
};

struct EncodeOptions {
  // codebook: one non-negative weight per value (the values array's order), e.g. a diagonal
  // Fisher or |x|^2 of the value's input column. Empty: all weights 1.
  std::span<const float> importance;
};

// Bytes by role, and bits per weight of the dense shape (rows * cols).
struct CompressionStats {
  int64_t weights = 0;         // rows * cols
  int64_t values = 0;          // kept values (the values array's length)
  uint64_t value_bytes = 0;    // codes, entropy streams, raw values
  uint64_t metadata_bytes = 0;  // the format's index arrays
  uint64_t scale_bytes = 0;    // scales, zero-points, codebooks
  double value_bits() const { return weights ? 8.0 * value_bytes / weights : 0.0; }
  double metadata_bits() const { return weights ? 8.0 * metadata_bytes / weights : 0.0; }
  double scale_bits() const { return weights ? 8.0 * scale_bytes / weights : 0.0; }
  double total_bits() const { return value_bits() + metadata_bits() + scale_bits(); }
  // Bits per kept value of the value arrays alone (what an entropy coder achieves).
  double bits_per_value() const { return values ? 8.0 * value_bytes / values : 0.0; }
};

enum class ArrayRole { Values, Metadata, Scales };

// One row per codec, like the format table.
struct CodecTraits {
  CodecKind kind;
  std::string_view name;  // "lossless", "zstd", "int8", "int4", "codebook4", "codebook8"
  bool lossless;
  CompressedMatrix (*encode)(const PackedMatrix& packed, const CodecParams& params,
                             const EncodeOptions& options);
  // The values array back (dtype packed.value_dtype): bit-exact for lossless codecs, the
  // dequantised values rounded to the value dtype otherwise.
  PackedArray (*decode_values)(const CompressedMatrix& compressed);
  // The dequantised values as f32 before rounding to the value dtype (what the kernels use).
  std::vector<float> (*decode_f32)(const CompressedMatrix& compressed);
  // Whether an array name is one of this codec's, and its role.
  bool (*owns_array)(std::string_view name);
  ArrayRole (*role)(std::string_view name);
};

const CodecTraits& codec_traits(CodecKind kind);
// "lossless", "zstd", "int8", "int4", "codebook4", "codebook8"; throws sparsa::Error otherwise.
CodecKind parse_codec_name(std::string_view name);
std::string_view codec_name(CodecKind kind);
std::span<const CodecTraits> all_codecs();

CompressedMatrix compress(const PackedMatrix& packed, const CodecParams& params,
                          const EncodeOptions& options = {});
// The packed matrix back, arrays in their original order.
PackedMatrix decompress(const CompressedMatrix& compressed);
// Dequantised values as f32 (bit-exact values for lossless codecs).
std::vector<float> decode_values_f32(const CompressedMatrix& compressed);

// The structural check for a compressed matrix from an untrusted file: the format's deep check
// of its metadata (row pointers, offsets, bitmaps) and the size and dtype of every codec array,
// so no kernel or decoder indexes out of bounds. Entropy and zstd streams are checked as they
// decode. Throws sparsa::Error.
void check_compressed(const CompressedMatrix& compressed);

CompressionStats compression_stats(const CompressedMatrix& compressed);
CompressionStats compression_stats(const PackedMatrix& packed);

// Y = X * W^T reading the compressed bytes directly (no decompressed copy of W), as
// sparsa::gemm. Fused kernels exist for {dense, nm 2:4, bitmap, vnm V:2:M} x {int8, int4,
// codebook4} (codebook4 without `rans`); has_fused_kernel says whether one applies; otherwise
// this decompresses W and calls sparsa::gemm.
bool has_fused_kernel(const CompressedMatrix& w);
void compressed_gemm(std::span<const float> x, int64_t m, const CompressedMatrix& w,
                     std::span<float> y, Backend backend = Backend::Simd);

struct CompressedGemmOptions {
  // Opt-in integer activations (llama.cpp's q8 x q4 idea). X is quantised once per call to int8,
  // one fp32 scale per 32 columns (s = max|x| / 127, q = round-to-nearest-even(x / s)), and the
  // int8 / int4 codes are multiplied with it in integers (AVX-512 VNNI on CPUs with it, a
  // portable integer loop elsewhere); each 32-column block's exact integer sum (per weight group
  // where a bitmap block holds two) is scaled once by weight scale * X scale. The result differs from the f32 path by X's rounding only:
  // |y - y_f32| <= sum_k |w_k| s_k / 2 (+ f32 summation error), w the dequantised weights.
  // codebook4's codebooks are rounded to int8 the same way (scale max|c| / 127 per codebook),
  // which adds <= sum_k |x_k| max|c| / 254 to that bound.
  // Applies to dense, nm 2:4, bitmap and vnm V:2:M with int8 / int4 / codebook4 codes
  // (has_int8_activation_kernel; vnm quantises each row block's gathered X per 32 gathered
  // columns, so its s_k are those blocks' scales);
  // other combinations ignore it and run the f32 path.
  bool int8_activations = false;
};
bool has_int8_activation_kernel(const CompressedMatrix& w);
void compressed_gemm(std::span<const float> x, int64_t m, const CompressedMatrix& w,
                     std::span<float> y, Backend backend, const CompressedGemmOptions& options);

}  // namespace sparsa
