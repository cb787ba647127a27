// Codebook quantisation ("centroids", as in Deep Compression and SqueezeLLM): k-means over the
// values, optionally weighted by importance, with one codebook per segment (output channel) or
// one for the tensor; 4- or 8-bit indices and an fp16 codebook (layout in sparsa/codec.h).
// The centroids are rounded to fp16 before the values are assigned, so every value gets the
// nearest of the codebook entries actually stored. When a codebook's values include exact zeros
// (pruned or padded entries) one centroid is pinned at 0, so zeros stay zero.
#include <algorithm>
#include <cmath>

#include "codec/codec_internal.h"

namespace sparsa::codec {
namespace {

int codebook_size(CodecKind kind) { return kind == CodecKind::Codebook4 ? 16 : 256; }

int64_t book_count(const CodecParams& params, const ValueLayout& layout) {
  return params.per_channel ? layout.segments() : 1;
}

uint64_t book_seed(uint64_t seed, int64_t book) {
  // Distinct, reproducible streams per codebook whatever the thread count.
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(book + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  return z ^ (z >> 27);
}

}  // namespace

CompressedMatrix encode_codebook(const PackedMatrix& packed, const CodecParams& params,
                                 const EncodeOptions& options) {
  const int k = codebook_size(params.kind);
  if (params.iterations < 0 || params.iterations > 100000)
    fail("{}: {} k-means iterations is not in 0..100000", describe(packed), params.iterations);
  const ValueLayout layout = value_layout(packed);
  const int64_t n = layout.count();
  const std::vector<float> values = values_f32(packed, n, true);
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(values[i]) > 65504.0f)
      fail("{}: value {} = {} does not fit the fp16 codebook", describe(packed), i, values[i]);
  const auto& importance = options.importance;
  if (!importance.empty()) {
    if (static_cast<int64_t>(importance.size()) != n)
      fail("{}: importance has {} weights, expected one per value ({})", describe(packed),
           importance.size(), n);
    for (int64_t i = 0; i < n; ++i)
      if (!(importance[i] >= 0) || !std::isfinite(importance[i]))
        fail("{}: importance weight {} = {} is not a finite non-negative number",
             describe(packed), i, importance[i]);
  }

  const int64_t books = book_count(params, layout);
  std::vector<uint16_t> codebook(books * k, 0);
  std::vector<uint8_t> codes(n, 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < books; ++b) {
    const int64_t a = params.per_channel ? layout.segment_ptr[b] : 0;
    const int64_t e = params.per_channel ? layout.segment_ptr[b + 1] : n;
    std::span<const float> data(values.data() + a, e - a);
    std::span<const float> weights =
        importance.empty() ? std::span<const float>() : importance.subspan(a, e - a);
    // Zeros (pruned or padded entries) keep an exact 0 centroid.
    const bool has_zero = std::any_of(data.begin(), data.end(), [](float v) { return v == 0; });
    std::vector<float> centres =
        kmeans_1d(data, weights, k, params.iterations, book_seed(params.seed, b), has_zero);
    for (int j = 0; j < k; ++j) {
      codebook[b * k + j] = f16_from_f32(centres[j]);
      centres[j] = f32_from_f16(codebook[b * k + j]);  // rounding keeps them ascending
    }
    for (int64_t i = a; i < e; ++i)
      codes[i] = static_cast<uint8_t>(nearest_centroid(centres, values[i]));
  }

  std::vector<PackedArray> arrays;
  if (params.entropy) {
    PackedArray stream = make_array("codes_rans", DType::U8, 0);
    stream.bytes = rans_encode(codes, k);
    arrays.push_back(std::move(stream));
  } else if (k == 16) {
    PackedArray packed_codes = make_array("codes", DType::U8, (n + 1) / 2);
    uint8_t* c = array_data<uint8_t>(packed_codes);
    for (int64_t i = 0; i < n; ++i) set_nibble(c, i, codes[i]);
    arrays.push_back(std::move(packed_codes));
  } else {
    PackedArray raw = make_array("codes", DType::U8, n);
    std::memcpy(raw.bytes.data(), codes.data(), n);
    arrays.push_back(std::move(raw));
  }
  PackedArray book_array = make_array("codebook", DType::F16, codebook.size());
  std::memcpy(book_array.bytes.data(), codebook.data(), codebook.size() * 2);
  arrays.push_back(std::move(book_array));
  return replace_values(packed, params, std::move(arrays));
}

std::vector<uint8_t> codebook_codes(const CompressedMatrix& compressed) {
  const int k = codebook_size(compressed.codec.kind);
  const int64_t n = value_layout(compressed.packed).count();
  if (compressed.codec.entropy)
    return rans_decode(expect_blob(compressed, "codes_rans", DType::U8).bytes, n, k,
                       describe(compressed) + ", array 'codes_rans'");
  std::vector<uint8_t> codes(n);
  if (k == 16) {
    const auto* c = reinterpret_cast<const uint8_t*>(
        expect_array(compressed, "codes", DType::U8, (n + 1) / 2).bytes.data());
    for (int64_t i = 0; i < n; ++i) codes[i] = get_nibble(c, i);
  } else {
    std::memcpy(codes.data(), expect_array(compressed, "codes", DType::U8, n).bytes.data(), n);
  }
  return codes;
}

std::vector<float> decode_codebook_f32(const CompressedMatrix& compressed) {
  const int k = codebook_size(compressed.codec.kind);
  const ValueLayout layout = value_layout(compressed.packed);
  const int64_t books = book_count(compressed.codec, layout);
  const std::vector<uint8_t> codes = codebook_codes(compressed);
  const auto book =
      array_span<uint16_t>(expect_array(compressed, "codebook", DType::F16, books * k));
  std::vector<float> out(codes.size());
  for (int64_t s = 0; s < layout.segments(); ++s) {
    const int64_t b = compressed.codec.per_channel ? s : 0;
    for (int64_t i = layout.segment_ptr[s]; i < layout.segment_ptr[s + 1]; ++i)
      out[i] = f32_from_f16(book[b * k + codes[i]]);
  }
  return out;
}

PackedArray decode_codebook_values(const CompressedMatrix& compressed) {
  return values_array(decode_codebook_f32(compressed), compressed.packed.value_dtype);
}

bool codebook_owns(std::string_view name) {
  return name == "codes" || name == "codes_rans" || name == "codebook";
}

ArrayRole codebook_role(std::string_view name) {
  return name == "codebook" ? ArrayRole::Scales : ArrayRole::Values;
}

}  // namespace sparsa::codec
