// Lossless: each float value split into its exponent field, rANS-coded (trained weights use few
// exponents: DFloat11 keeps bf16 weights bit-exact in about 70% of the bytes this way), and the
// sign and mantissa bits, stored raw because they are close to uniform.
//
//   bf16  exponent 8 bits (alphabet 256), sign+mantissa 8 bits  (sign << 7 | mantissa)
//   f16   exponent 5 bits (alphabet 32),  sign+mantissa 11 bits (sign << 10 | mantissa)
//   f32   exponent 8 bits (alphabet 256), sign+mantissa 24 bits (sign << 23 | mantissa)
// sign_mantissa is an LSB-first bit stream of those fields, value after value.
#include <fmt/format.h>

#include "codec/codec_internal.h"

namespace sparsa::codec {
namespace {

struct FloatSplit {
  int exponent_bits;
  int mantissa_bits;
  int total_bits() const { return 1 + exponent_bits + mantissa_bits; }
  int raw_bits() const { return 1 + mantissa_bits; }
};

FloatSplit float_split(DType dtype) {
  switch (dtype) {
    case DType::BF16:
      return {8, 7};
    case DType::F16:
      return {5, 10};
    default:
      return {8, 23};
  }
}

uint32_t load_bits(const std::byte* data, int64_t i, int bytes) {
  uint32_t v = 0;
  std::memcpy(&v, data + bytes * i, bytes);  // little-endian host
  return v;
}

}  // namespace

CompressedMatrix encode_lossless(const PackedMatrix& packed, const CodecParams& params,
                                 const EncodeOptions&) {
  const ValueLayout layout = value_layout(packed);
  const int64_t n = layout.count();
  const PackedArray& values = packed.array("values");
  if (!is_float_weight_dtype(values.dtype) ||
      values.bytes.size() != static_cast<size_t>(n) * dtype_size(values.dtype))
    fail("{}: values must be {} x F32/F16/BF16, found {} bytes of {}", describe(packed), n,
         values.bytes.size(), dtype_name(values.dtype));
  const FloatSplit split = float_split(values.dtype);
  const int bytes = static_cast<int>(dtype_size(values.dtype));

  std::vector<uint8_t> exponents(n);
  PackedArray raw = make_array("sign_mantissa", DType::U8, (n * split.raw_bits() + 7) / 8);
  uint8_t* out = array_data<uint8_t>(raw);
  uint64_t acc = 0;  // LSB-first bit writer
  int pending = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = load_bits(values.bytes.data(), i, bytes);
    const uint32_t sign = v >> (split.total_bits() - 1);
    exponents[i] =
        static_cast<uint8_t>((v >> split.mantissa_bits) & ((1u << split.exponent_bits) - 1));
    acc |= uint64_t((sign << split.mantissa_bits) | (v & ((1u << split.mantissa_bits) - 1)))
           << pending;
    pending += split.raw_bits();
    for (; pending >= 8; pending -= 8, acc >>= 8) *out++ = static_cast<uint8_t>(acc);
  }
  if (pending > 0) *out = static_cast<uint8_t>(acc);
  PackedArray exp = make_array("exponents", DType::U8, 0);
  exp.bytes = rans_encode(exponents, 1 << split.exponent_bits, params.gpu_stream ? 2 : 1);
  std::vector<PackedArray> arrays;
  arrays.push_back(std::move(exp));
  arrays.push_back(std::move(raw));
  return replace_values(packed, params, std::move(arrays));
}

PackedArray decode_lossless_values(const CompressedMatrix& compressed) {
  const ValueLayout layout = value_layout(compressed.packed);
  const int64_t n = layout.count();
  const DType dtype = compressed.packed.value_dtype;
  if (!is_float_weight_dtype(dtype))
    fail("{}: value dtype {} is not F32, F16 or BF16", describe(compressed), dtype_name(dtype));
  const FloatSplit split = float_split(dtype);
  const int bytes = static_cast<int>(dtype_size(dtype));
  const std::vector<uint8_t> exponents =
      rans_decode(expect_blob(compressed, "exponents", DType::U8).bytes, n,
                  1 << split.exponent_bits, describe(compressed) + ", array 'exponents'");
  const PackedArray& raw =
      expect_array(compressed, "sign_mantissa", DType::U8, (n * split.raw_bits() + 7) / 8);
  const auto* in = reinterpret_cast<const uint8_t*>(raw.bytes.data());

  PackedArray values = make_array("values", dtype, n);
  const uint8_t* in_end = in + raw.bytes.size();
  uint64_t acc = 0;  // LSB-first bit reader
  int available = 0;
  const uint32_t field_mask = (1u << split.raw_bits()) - 1;
  for (int64_t i = 0; i < n; ++i) {
    for (; available < split.raw_bits() && in < in_end; available += 8)
      acc |= uint64_t{*in++} << available;
    const uint32_t field = static_cast<uint32_t>(acc) & field_mask;
    acc >>= split.raw_bits();
    available -= split.raw_bits();
    const uint32_t sign = field >> split.mantissa_bits;
    const uint32_t mantissa = field & ((1u << split.mantissa_bits) - 1);
    const uint32_t v = (sign << (split.total_bits() - 1)) |
                       (uint32_t{exponents[i]} << split.mantissa_bits) | mantissa;
    std::memcpy(values.bytes.data() + bytes * i, &v, bytes);
  }
  return values;
}

std::vector<float> decode_lossless_f32(const CompressedMatrix& compressed) {
  return array_f32(decode_lossless_values(compressed));
}

bool lossless_owns(std::string_view name) { return name == "exponents" || name == "sign_mantissa"; }

ArrayRole lossless_role(std::string_view) { return ArrayRole::Values; }

}  // namespace sparsa::codec
