// Value segments, value reading and array plumbing shared by every codec.
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "codec/codec_internal.h"

namespace sparsa::codec {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Row pointers (I64[n + 1]) from an untrusted matrix: start at 0, never decrease, and each
// segment holds at most `max_len` values.
std::vector<int64_t> read_row_ptr(const PackedMatrix& packed, std::string_view name, int64_t n,
                                  int64_t max_len) {
  const PackedArray& a = packed.array(name);
  if (a.dtype != DType::I64 || a.bytes.size() != static_cast<size_t>(n + 1) * 8)
    fail("{}: array '{}' must be I64[{}], found {} bytes of {}", describe(packed), name, n + 1,
         a.bytes.size(), dtype_name(a.dtype));
  std::vector<int64_t> ptr(n + 1);
  std::memcpy(ptr.data(), a.bytes.data(), a.bytes.size());
  if (ptr[0] != 0) fail("{}: array '{}' starts at {}, expected 0", describe(packed), name, ptr[0]);
  for (int64_t i = 0; i < n; ++i)
    if (ptr[i + 1] < ptr[i] || ptr[i + 1] - ptr[i] > max_len)
      fail("{}: array '{}' entry {} = {} after {} (at most {} values per segment)",
           describe(packed), name, i + 1, ptr[i + 1], ptr[i], max_len);
  return ptr;
}

std::vector<int64_t> uniform_segments(int64_t segments, int64_t length) {
  std::vector<int64_t> ptr(segments + 1);
  for (int64_t s = 0; s <= segments; ++s) ptr[s] = s * length;
  return ptr;
}

}  // namespace

ValueLayout value_layout(const PackedMatrix& packed) {
  const int64_t rows = packed.rows, cols = packed.cols;
  if (rows < 0 || cols < 0) fail("{}: negative shape", describe(packed));
  if (rows > (int64_t{1} << 40) || cols > (int64_t{1} << 40))
    fail("{}: shape too large", describe(packed));
  // Every layout below counts at most (rows + 4095) x (cols + 4095) values (bsr pads to blocks
  // of up to 4096): bounding rows x cols keeps the counts inside int64 (a 2^23 x 2^40 dense
  // matrix from a 300-byte file overflowed them: UBSan in the container fuzz harness).
  if (rows > 0 && cols > (int64_t{1} << 56) / rows)
    fail("{}: shape too large ({} x {} values)", describe(packed), rows, cols);
  const Pattern& p = packed.pattern;
  ValueLayout layout;
  switch (packed.format) {
    case FormatKind::Dense:
      layout.segment_ptr = uniform_segments(rows, cols);
      break;
    case FormatKind::CSR:
    case FormatKind::Bitmap:
      layout.segment_ptr = read_row_ptr(packed, "row_ptr", rows, cols);
      break;
    case FormatKind::NM:
      if (p.n < 1 || p.m < 2 || p.n >= p.m || p.m > 32)
        fail("{}: pattern {}:{} is not a valid N:M", describe(packed), p.n, p.m);
      layout.segment_ptr = uniform_segments(rows, ceil_div(cols, p.m) * p.n);
      break;
    case FormatKind::VNM:
      if (p.m < 4 || p.m > 32) fail("{}: V:N:M with M = {} is not valid", describe(packed), p.m);
      layout.segment_ptr = uniform_segments(rows, ceil_div(cols, p.m) * 2);
      break;
    case FormatKind::BSR: {
      const int64_t bh = p.block_rows, bw = p.block_cols;
      if (bh < 1 || bw < 1 || bh > 4096 || bw > 4096)
        fail("{}: block shape {}x{} is not valid", describe(packed), bh, bw);
      const int64_t block_rows = ceil_div(rows, bh), block_cols = ceil_div(cols, bw);
      auto ptr = read_row_ptr(packed, "block_row_ptr", block_rows, block_cols);
      for (auto& v : ptr) v *= bh * bw;
      layout.segment_ptr = std::move(ptr);
      break;
    }
    default:
      fail("{}: unknown format kind {}", describe(packed), static_cast<int>(packed.format));
  }
  return layout;
}

std::vector<int64_t> group_ptr(const ValueLayout& layout, int group_size) {
  const int64_t segments = layout.segments();
  std::vector<int64_t> ptr(segments + 1, 0);
  for (int64_t s = 0; s < segments; ++s)
    ptr[s + 1] = ptr[s] + ceil_div(layout.segment_ptr[s + 1] - layout.segment_ptr[s], group_size);
  return ptr;
}

std::string describe(const PackedMatrix& packed) {
  return fmt::format("packed {} matrix [{}, {}]", format_name(packed.format), packed.rows,
                     packed.cols);
}

std::string describe(const CompressedMatrix& compressed) {
  return fmt::format("{} codec on {}", compressed.codec.to_string(), describe(compressed.packed));
}

std::vector<float> values_f32(const PackedMatrix& packed, int64_t count, bool require_finite) {
  const PackedArray& a = packed.array("values");
  if (!is_float_weight_dtype(a.dtype) || a.dtype != packed.value_dtype)
    fail("{}: values have dtype {}, expected {} (F32, F16 or BF16)", describe(packed),
         dtype_name(a.dtype), dtype_name(packed.value_dtype));
  if (a.bytes.size() != static_cast<size_t>(count) * dtype_size(a.dtype))
    fail("{}: values hold {} bytes, expected {} values of {}", describe(packed), a.bytes.size(),
         count, dtype_name(a.dtype));
  std::vector<float> out = array_f32(a);
  if (require_finite)
    for (int64_t i = 0; i < count; ++i)
      if (!std::isfinite(out[i]))
        fail("{}: value {} is {} (a lossy codec needs finite values)", describe(packed), i,
             out[i]);
  return out;
}

std::vector<float> array_f32(const PackedArray& a) {
  const size_t count = a.bytes.size() / dtype_size(a.dtype);
  std::vector<float> out(count);
  const std::byte* data = a.bytes.data();
  for (size_t i = 0; i < count; ++i) {
    if (a.dtype == DType::F32) {
      std::memcpy(&out[i], data + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, data + 2 * i, 2);
      out[i] = a.dtype == DType::F16 ? f32_from_f16(bits) : f32_from_bf16(bits);
    }
  }
  return out;
}

PackedArray values_array(std::span<const float> values, DType dtype) {
  PackedArray a = make_array("values", dtype, values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(a.bytes.data() + 4 * i, &values[i], 4);
    } else {
      const uint16_t bits = dtype == DType::F16 ? f16_from_f32(values[i]) : bf16_from_f32(values[i]);
      std::memcpy(a.bytes.data() + 2 * i, &bits, 2);
    }
  }
  return a;
}

namespace {
constexpr float kF16Max = 65504.0f;

// The next fp16 above (direction +1) or below (-1) a finite fp16 bit pattern.
uint16_t f16_step(uint16_t bits, int direction) {
  const bool negative = bits & 0x8000u;
  if ((bits & 0x7fffu) == 0) return direction > 0 ? 0x0001u : 0x8001u;
  return (negative == (direction < 0)) ? static_cast<uint16_t>(bits + 1)
                                       : static_cast<uint16_t>(bits - 1);
}
}  // namespace

bool f16_round_up(float value, uint16_t* out) {
  if (!(std::fabs(value) <= kF16Max)) return false;
  uint16_t bits = f16_from_f32(value);
  if (f32_from_f16(bits) < value) bits = f16_step(bits, +1);
  if (!(std::fabs(f32_from_f16(bits)) <= kF16Max)) return false;
  *out = bits;
  return true;
}

bool f16_round_down(float value, uint16_t* out) {
  if (!(std::fabs(value) <= kF16Max)) return false;
  uint16_t bits = f16_from_f32(value);
  if (f32_from_f16(bits) > value) bits = f16_step(bits, -1);
  if (!(std::fabs(f32_from_f16(bits)) <= kF16Max)) return false;
  *out = bits;
  return true;
}

PackedArray make_array(std::string name, DType dtype, size_t count) {
  PackedArray a;
  a.name = std::move(name);
  a.dtype = dtype;
  a.bytes.assign(count * dtype_size(dtype), std::byte{0});
  return a;
}

const PackedArray& expect_blob(const CompressedMatrix& compressed, std::string_view name,
                               DType dtype) {
  for (const auto& a : compressed.packed.arrays)
    if (a.name == name) {
      if (a.dtype != dtype)
        fail("{}: array '{}' has dtype {}, expected {}", describe(compressed), name,
             dtype_name(a.dtype), dtype_name(dtype));
      return a;
    }
  fail("{}: array '{}' is missing", describe(compressed), name);
}

const PackedArray& expect_array(const CompressedMatrix& compressed, std::string_view name,
                                DType dtype, uint64_t count) {
  const PackedArray& a = expect_blob(compressed, name, dtype);
  if (a.bytes.size() != count * dtype_size(dtype))
    fail("{}: array '{}' holds {} bytes, expected {} ({} x {})", describe(compressed), name,
         a.bytes.size(), count * dtype_size(dtype), count, dtype_name(dtype));
  return a;
}

CompressedMatrix replace_values(const PackedMatrix& packed, const CodecParams& params,
                                std::vector<PackedArray> arrays) {
  CompressedMatrix out;
  out.codec = params;
  out.packed.format = packed.format;
  out.packed.rows = packed.rows;
  out.packed.cols = packed.cols;
  out.packed.value_dtype = packed.value_dtype;
  out.packed.pattern = packed.pattern;
  for (const auto& a : packed.arrays) {
    if (a.name == "values") {
      for (auto& c : arrays) out.packed.arrays.push_back(std::move(c));
      arrays.clear();
    } else {
      out.packed.arrays.push_back(a);
    }
  }
  return out;
}

}  // namespace sparsa::codec
