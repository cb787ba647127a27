// Shared pieces of the codecs: value segments and groups (see sparsa/codec.h), value reading,
// nibble packing, swapping the values array for a codec's arrays, and the per-codec functions
// the codec table points at.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparsa/codec.h"
#include "sparsa/error.h"
#include "sparsa/half.h"

namespace sparsa::codec {

// ---- segments and groups ---------------------------------------------------------------------
// segment_ptr[s]..segment_ptr[s+1] are the positions of segment s's values in "values".
// Reads only the format's metadata (row pointers), checking them; the values array need not be
// present (it is not in a compressed matrix).
struct ValueLayout {
  std::vector<int64_t> segment_ptr;
  int64_t count() const { return segment_ptr.empty() ? 0 : segment_ptr.back(); }
  int64_t segments() const { return static_cast<int64_t>(segment_ptr.size()) - 1; }
};
ValueLayout value_layout(const PackedMatrix& packed);

// group_ptr[s] = first group of segment s; group_ptr.back() = number of groups.
std::vector<int64_t> group_ptr(const ValueLayout& layout, int group_size);

// ---- messages ---------------------------------------------------------------------------------
// "packed nm matrix [64, 128]", "int4:g64 codec on packed nm matrix [64, 128]"
std::string describe(const PackedMatrix& packed);
std::string describe(const CompressedMatrix& compressed);

// ---- values -----------------------------------------------------------------------------------
// The "values" array as f32 (f32, f16, bf16), checked against the layout's count; throws on a
// NaN or infinity, naming its position (lossy codecs cannot represent them).
std::vector<float> values_f32(const PackedMatrix& packed, int64_t count, bool require_finite);

// Any f32/f16/bf16 array as f32.
std::vector<float> array_f32(const PackedArray& array);
// f32 values rounded to `dtype` (f32, f16, bf16) as a "values" array.
PackedArray values_array(std::span<const float> values, DType dtype);

// fp16 rounding in a chosen direction, for scales (up) and group minimums (down); false when
// the value does not fit in fp16 (the caller names the group in its error).
bool f16_round_up(float value, uint16_t* bits);
bool f16_round_down(float value, uint16_t* bits);

// ---- nibbles (value i: byte i/2, low nibble for even i) ---------------------------------------
inline uint8_t get_nibble(const uint8_t* bytes, int64_t i) {
  return static_cast<uint8_t>((bytes[i >> 1] >> ((i & 1) * 4)) & 0xf);
}
inline void set_nibble(uint8_t* bytes, int64_t i, uint8_t value) {
  const int shift = static_cast<int>(i & 1) * 4;
  bytes[i >> 1] = static_cast<uint8_t>((bytes[i >> 1] & ~(0xf << shift)) | ((value & 0xf) << shift));
}

// ---- arrays -----------------------------------------------------------------------------------
PackedArray make_array(std::string name, DType dtype, size_t count);

template <typename T>
std::span<const T> array_span(const PackedArray& array) {
  return {reinterpret_cast<const T*>(array.bytes.data()), array.bytes.size() / sizeof(T)};
}
template <typename T>
T* array_data(PackedArray& array) {
  return reinterpret_cast<T*>(array.bytes.data());
}

// Throws unless `compressed` has array `name` of `dtype` with exactly `count` elements.
const PackedArray& expect_array(const CompressedMatrix& compressed, std::string_view name,
                                DType dtype, uint64_t count);
// Throws unless `compressed` has array `name` (any size) of `dtype`.
const PackedArray& expect_blob(const CompressedMatrix& compressed, std::string_view name,
                               DType dtype);

// The compressed matrix: `packed` with its "values" array replaced, in place, by `arrays`.
CompressedMatrix replace_values(const PackedMatrix& packed, const CodecParams& params,
                                std::vector<PackedArray> arrays);

// ---- rANS (src/codec/rans.cc) -----------------------------------------------------------------
// A static-model rANS stream of symbols < alphabet (<= 256); layout in docs/compression.md.
// Version 1: 4 states, 64Ki-symbol chunks, byte renormalisation (the CPU's); version 2: 32
// states (one per warp lane), 4096-symbol chunks, 16-bit renormalisation (the GPU's).
std::vector<std::byte> rans_encode(std::span<const uint8_t> symbols, int alphabet,
                                   int version = 1);
// Checks a stream's header and table sizes against `count` symbols without decoding (cheap; it
// bounds `count` by the stream's size); throws sparsa::Error naming `what`.
void check_rans_header(std::span<const std::byte> stream, int64_t count, int alphabet,
                       const std::string& what);
// The version byte (0 for an empty stream).
int rans_stream_version(std::span<const std::byte> stream);
// What a GPU decoder of a version-2 stream needs, checked as rans_decode checks the header.
struct RansGpuTables {
  int64_t count = 0;
  int chunk_symbols = 0, prob_bits = 0;
  std::vector<uint32_t> table;       // [2^prob_bits]: symbol | (freq - 1) << 8 | (slot - start) << 20
  uint64_t data_offset = 0;          // byte offset of the first chunk in the stream
  std::vector<uint64_t> chunk_word;  // [chunks + 1] u16-word offsets of the chunks from there
};
RansGpuTables rans_gpu_tables(std::span<const std::byte> stream, int64_t count, int alphabet,
                              const std::string& what);
// Decodes exactly `count` symbols; throws sparsa::Error naming `what` on any inconsistency.
std::vector<uint8_t> rans_decode(std::span<const std::byte> stream, int64_t count, int alphabet,
                                 const std::string& what);

// ---- k-means (src/codec/kmeans.cc) ------------------------------------------------------------
// Weighted 1-D k-means with greedy k-means++ seeding. Returns k centroids, ascending
// (duplicates when the data have fewer than k distinct values); with pin_zero one of them is
// exactly 0 and stays there. Deterministic for a given seed.
std::vector<float> kmeans_1d(std::span<const float> data, std::span<const float> weights, int k,
                             int iterations, uint64_t seed, bool pin_zero = false);
// Index of the nearest entry of an ascending codebook.
int nearest_centroid(std::span<const float> codebook, float value);

// ---- the codecs (one file each) ---------------------------------------------------------------
CompressedMatrix encode_quant(const PackedMatrix&, const CodecParams&, const EncodeOptions&);
PackedArray decode_quant_values(const CompressedMatrix&);
std::vector<float> decode_quant_f32(const CompressedMatrix&);
bool quant_owns(std::string_view name);
ArrayRole quant_role(std::string_view name);

CompressedMatrix encode_codebook(const PackedMatrix&, const CodecParams&, const EncodeOptions&);
PackedArray decode_codebook_values(const CompressedMatrix&);
std::vector<float> decode_codebook_f32(const CompressedMatrix&);
bool codebook_owns(std::string_view name);
ArrayRole codebook_role(std::string_view name);
// The raw codes (U8 per value) of a codebook matrix, decoding the rANS stream when present.
std::vector<uint8_t> codebook_codes(const CompressedMatrix&);

CompressedMatrix encode_lossless(const PackedMatrix&, const CodecParams&, const EncodeOptions&);
PackedArray decode_lossless_values(const CompressedMatrix&);
std::vector<float> decode_lossless_f32(const CompressedMatrix&);
bool lossless_owns(std::string_view name);
ArrayRole lossless_role(std::string_view name);

CompressedMatrix encode_zstd(const PackedMatrix&, const CodecParams&, const EncodeOptions&);
PackedArray decode_zstd_values(const CompressedMatrix&);
std::vector<float> decode_zstd_f32(const CompressedMatrix&);
bool zstd_owns(std::string_view name);
ArrayRole zstd_role(std::string_view name);

// Bits per code of the quantisation codecs (8 or 4) and their largest code.
inline int code_bits(CodecKind kind) {
  return kind == CodecKind::Int4 || kind == CodecKind::Codebook4 ? 4 : 8;
}

}  // namespace sparsa::codec
