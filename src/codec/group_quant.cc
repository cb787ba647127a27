// int8 / int4 group quantisation of a packed matrix's values (layout in sparsa/codec.h).
//
// Symmetric: scale = max|v| / qmax rounded *up* to fp16, q = round(v / scale) in [-qmax, qmax];
// then |v - scale*q| <= scale/2 for every value and zeros stay exactly zero.
// Asymmetric (integer zero-point): lo = min(min, 0), hi = max(max, 0), scale = (hi - lo) / qmax
// rounded up, zero = round(-lo / scale) in [0, qmax], q = round(v / scale) + zero clamped to
// [0, qmax]. The grid scale * ([0, qmax] - zero) reaches within scale/2 of lo and of hi, so
// again |v - v'| <= scale/2, and 0 is the grid point q = zero: pruned and padded zeros stay
// exactly zero (the formats require padding to be 0, and sparse products rely on it).
// Rounding the scale to the nearest fp16 instead would let the grid fall short of the group's
// extremes by up to qmax * 2^-11 * scale, which is why it is rounded up.
#include <algorithm>
#include <atomic>
#include <cmath>

#include "codec/codec_internal.h"

namespace sparsa::codec {
namespace {

struct QuantShape {
  bool four_bit;
  bool symmetric;
  int qmax;  // largest |q| (sym) or q (asym)
};

QuantShape quant_shape(const CodecParams& p) {
  const bool four = p.kind == CodecKind::Int4;
  return {four, p.symmetric, p.symmetric ? (four ? 7 : 127) : (four ? 15 : 255)};
}

void check_group_size(const std::string& what, int group_size) {
  if (group_size != 32 && group_size != 64 && group_size != 128)
    fail("{}: group size {} is not supported (32, 64 or 128)", what, group_size);
}

}  // namespace

CompressedMatrix encode_quant(const PackedMatrix& packed, const CodecParams& params,
                              const EncodeOptions&) {
  check_group_size(describe(packed), params.group_size);
  const QuantShape shape = quant_shape(params);
  const ValueLayout layout = value_layout(packed);
  const int64_t n = layout.count();
  const std::vector<float> values = values_f32(packed, n, true);
  const int G = params.group_size;
  const std::vector<int64_t> gptr = group_ptr(layout, G);
  const int64_t groups = gptr.back();

  std::vector<uint16_t> scales(groups, 0);
  std::vector<uint8_t> zeros(shape.symmetric ? 0 : groups, 0);
  std::vector<int16_t> q(n, 0);
  std::atomic<int64_t> bad_group{-1};
  const int64_t segments = layout.segments();
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t s = 0; s < segments; ++s) {
    const int64_t start = layout.segment_ptr[s], end = layout.segment_ptr[s + 1];
    for (int64_t g = gptr[s]; g < gptr[s + 1]; ++g) {
      const int64_t a = start + (g - gptr[s]) * G, b = std::min(end, a + G);
      if (shape.symmetric) {
        float amax = 0;
        for (int64_t i = a; i < b; ++i) amax = std::max(amax, std::fabs(values[i]));
        if (amax == 0) continue;  // scale 0, codes 0
        uint16_t bits;
        if (!f16_round_up(amax / shape.qmax, &bits)) {
          bad_group = g;
          continue;
        }
        scales[g] = bits;
        const float scale = f32_from_f16(bits);
        for (int64_t i = a; i < b; ++i)
          q[i] = static_cast<int16_t>(
              std::clamp<float>(std::nearbyint(values[i] / scale), -shape.qmax, shape.qmax));
      } else {
        float lo = 0, hi = 0;
        for (int64_t i = a; i < b; ++i) {
          lo = std::min(lo, values[i]);
          hi = std::max(hi, values[i]);
        }
        if (hi == lo) continue;  // all zero: scale 0, zero-point 0, codes 0
        uint16_t bits;
        if (!f16_round_up((hi - lo) / shape.qmax, &bits)) {
          bad_group = g;
          continue;
        }
        scales[g] = bits;
        const float scale = f32_from_f16(bits);
        const float zero = std::clamp<float>(std::nearbyint(-lo / scale), 0, shape.qmax);
        zeros[g] = static_cast<uint8_t>(zero);
        for (int64_t i = a; i < b; ++i)
          q[i] = static_cast<int16_t>(
              std::clamp<float>(std::nearbyint(values[i] / scale) + zero, 0, shape.qmax));
      }
    }
  }
  if (bad_group >= 0)
    fail("{}: group {} has a range that does not fit fp16 scales (|values| up to 65504 * {})",
         describe(packed), bad_group.load(), shape.qmax);

  std::vector<PackedArray> arrays;
  if (shape.four_bit) {
    PackedArray codes = make_array("codes", DType::U8, (n + 1) / 2);
    uint8_t* c = array_data<uint8_t>(codes);
    for (int64_t i = 0; i < n; ++i)
      set_nibble(c, i, static_cast<uint8_t>(shape.symmetric ? q[i] + 8 : q[i]));
    arrays.push_back(std::move(codes));
  } else if (shape.symmetric) {
    PackedArray codes = make_array("codes", DType::I8, n);
    int8_t* c = array_data<int8_t>(codes);
    for (int64_t i = 0; i < n; ++i) c[i] = static_cast<int8_t>(q[i]);
    arrays.push_back(std::move(codes));
  } else {
    PackedArray codes = make_array("codes", DType::U8, n);
    uint8_t* c = array_data<uint8_t>(codes);
    for (int64_t i = 0; i < n; ++i) c[i] = static_cast<uint8_t>(q[i]);
    arrays.push_back(std::move(codes));
  }
  PackedArray scale_array = make_array("scales", DType::F16, groups);
  std::memcpy(scale_array.bytes.data(), scales.data(), scales.size() * 2);
  arrays.push_back(std::move(scale_array));
  if (!shape.symmetric) {
    PackedArray zero_array = make_array("zeros", DType::U8, groups);
    std::memcpy(zero_array.bytes.data(), zeros.data(), zeros.size());
    arrays.push_back(std::move(zero_array));
  }
  return replace_values(packed, params, std::move(arrays));
}

std::vector<float> decode_quant_f32(const CompressedMatrix& compressed) {
  const CodecParams& params = compressed.codec;
  check_group_size(describe(compressed), params.group_size);
  const QuantShape shape = quant_shape(params);
  const ValueLayout layout = value_layout(compressed.packed);
  const int64_t n = layout.count();
  const int G = params.group_size;
  const std::vector<int64_t> gptr = group_ptr(layout, G);
  const int64_t groups = gptr.back();

  const PackedArray& codes =
      shape.four_bit ? expect_array(compressed, "codes", DType::U8, (n + 1) / 2)
                     : expect_array(compressed, "codes", shape.symmetric ? DType::I8 : DType::U8, n);
  const uint16_t* scales = array_span<uint16_t>(
      expect_array(compressed, "scales", DType::F16, groups)).data();
  const uint8_t* zeros =
      shape.symmetric
          ? nullptr
          : array_span<uint8_t>(expect_array(compressed, "zeros", DType::U8, groups)).data();
  const auto* c8 = reinterpret_cast<const uint8_t*>(codes.bytes.data());

  std::vector<float> out(n);
  const int64_t segments = layout.segments();
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t s = 0; s < segments; ++s) {
    const int64_t start = layout.segment_ptr[s], end = layout.segment_ptr[s + 1];
    for (int64_t i = start; i < end; ++i) {
      const int64_t g = gptr[s] + (i - start) / G;
      const float scale = f32_from_f16(scales[g]);
      int q;
      if (shape.four_bit)
        q = get_nibble(c8, i) - (shape.symmetric ? 8 : 0);
      else
        q = shape.symmetric ? static_cast<int8_t>(c8[i]) : c8[i];
      out[i] = scale * static_cast<float>(shape.symmetric ? q : q - zeros[g]);
    }
  }
  return out;
}

PackedArray decode_quant_values(const CompressedMatrix& compressed) {
  return values_array(decode_quant_f32(compressed), compressed.packed.value_dtype);
}

bool quant_owns(std::string_view name) {
  return name == "codes" || name == "scales" || name == "zeros";
}

ArrayRole quant_role(std::string_view name) {
  return name == "codes" ? ArrayRole::Values : ArrayRole::Scales;
}

}  // namespace sparsa::codec
