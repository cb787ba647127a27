// sparsa::compressed_gemm(): checks a compressed matrix's arrays against its shape, fills the
// kernel arguments (padded X, per-row groups for bitmap) and runs the fused kernel; combinations
// without one are decompressed and multiplied by sparsa::gemm (documented, not fused).
#include <algorithm>

#include <fmt/format.h>

#include "codec/codec_internal.h"
#include "cpu/codec_kernels.h"
#include "hwy/aligned_allocator.h"
#include "sparsa/kernels.h"

namespace sparsa {
namespace {

bool fused_format(const PackedMatrix& p) {
  return p.format == FormatKind::Dense || p.format == FormatKind::Bitmap ||
         (p.format == FormatKind::NM && p.pattern.n == 2 && p.pattern.m == 4) ||
         (p.format == FormatKind::VNM && p.pattern.n == 2);
}

}  // namespace

bool has_fused_kernel(const CompressedMatrix& w) {
  const CodecParams& c = w.codec;
  const bool codec_ok =
      ((c.kind == CodecKind::Int8 || c.kind == CodecKind::Int4) &&
       (c.group_size == 32 || c.group_size == 64 || c.group_size == 128)) ||
      (c.kind == CodecKind::Codebook4 && !c.entropy);
  return codec_ok && fused_format(w.packed);
}

bool has_int8_activation_kernel(const CompressedMatrix& w) {
  return has_fused_kernel(w) &&
         (w.codec.kind == CodecKind::Int8 || w.codec.kind == CodecKind::Int4 ||
          w.codec.kind == CodecKind::Codebook4);
}

void compressed_gemm(std::span<const float> x, int64_t m, const CompressedMatrix& w,
                     std::span<float> y, Backend backend) {
  compressed_gemm(x, m, w, y, backend, CompressedGemmOptions{});
}

void compressed_gemm(std::span<const float> x, int64_t m, const CompressedMatrix& w,
                     std::span<float> y, Backend backend, const CompressedGemmOptions& options) {
  const std::string who = codec::describe(w);
  const int64_t k = w.packed.cols, n = w.packed.rows;
  if (m < 0) fail("compressed gemm with {}: m = {} rows of X is negative", who, m);
  if (k > (int64_t{1} << 30)) fail("compressed gemm with {}: K above 2^30 is not supported", who);
  if (k > 0 && static_cast<uint64_t>(m) > x.size() / static_cast<uint64_t>(k))
    fail("compressed gemm with {}: x holds {} floats, but X[{}, {}] needs {}", who, x.size(), m,
         k, static_cast<double>(m) * k);
  if (n > 0 && static_cast<uint64_t>(m) > y.size() / static_cast<uint64_t>(n))
    fail("compressed gemm with {}: y holds {} floats, but Y[{}, {}] needs {}", who, y.size(), m,
         n, static_cast<double>(m) * n);
  if (!has_fused_kernel(w)) {
    gemm(x, m, decompress(w), y, backend);
    return;
  }
  if (m == 0 || n == 0) return;

  // Arrays against the shape (the layout also checks bitmap row pointers).
  const codec::ValueLayout layout = codec::value_layout(w.packed);
  const int64_t values = layout.count();
  cpu::CodecKernelArgs a;
  a.x = x.data();
  a.m = m;
  a.ldx = k;
  a.y = y.data();
  a.ldy = n;
  a.rows = n;
  a.cols = k;
  a.format = w.packed.format;
  a.group_size = w.codec.group_size;
  a.per_channel = w.codec.per_channel;
  const bool four = w.codec.kind != CodecKind::Int8;
  const PackedArray& codes =
      w.codec.kind == CodecKind::Int8 && w.codec.symmetric
          ? codec::expect_array(w, "codes", DType::I8, values)
          : codec::expect_array(w, "codes", DType::U8, four ? (values + 1) / 2 : values);
  a.codes = reinterpret_cast<const uint8_t*>(codes.bytes.data());
  a.code_bytes = codes.bytes.size();
  std::vector<int64_t> group_ptr;
  if (w.codec.kind == CodecKind::Codebook4) {
    a.code = cpu::CodeKind::Codebook4;
    const int64_t books = w.codec.per_channel ? layout.segments() : 1;
    a.codebook = reinterpret_cast<const uint16_t*>(
        codec::expect_array(w, "codebook", DType::F16, books * 16).bytes.data());
  } else {
    a.code = w.codec.kind == CodecKind::Int4 ? cpu::CodeKind::Int4
             : w.codec.symmetric             ? cpu::CodeKind::Int8Signed
                                             : cpu::CodeKind::Int8Unsigned;
    group_ptr = codec::group_ptr(layout, w.codec.group_size);
    a.scales = reinterpret_cast<const uint16_t*>(
        codec::expect_array(w, "scales", DType::F16, group_ptr.back()).bytes.data());
    if (!w.codec.symmetric)
      a.zeros = reinterpret_cast<const uint8_t*>(
          codec::expect_array(w, "zeros", DType::U8, group_ptr.back()).bytes.data());
    a.zero_point = w.codec.kind == CodecKind::Int4 ? 8 : 0;
  }
  switch (w.packed.format) {
    case FormatKind::Dense:
      a.values_per_row = k;
      break;
    case FormatKind::NM: {
      a.values_per_row = 2 * ((k + 3) / 4);
      a.nm_words_per_row = (a.values_per_row * 2 + 31) / 32;
      a.nm_meta = reinterpret_cast<const uint32_t*>(
          codec::expect_array(w, "indices", DType::U32, n * a.nm_words_per_row).bytes.data());
      break;
    }
    case FormatKind::VNM: {  // as nm 2:4 over 4 gathered columns per M-column block
      const int64_t v = w.packed.pattern.v, mm = w.packed.pattern.m;
      a.vnm_v = v;
      a.vnm_m = mm;
      a.vnm_col_blocks = (k + mm - 1) / mm;
      a.values_per_row = 2 * a.vnm_col_blocks;
      a.nm_words_per_row = (a.vnm_col_blocks + 7) / 8;
      a.nm_meta = reinterpret_cast<const uint32_t*>(
          codec::expect_array(w, "metadata", DType::U32, n * a.nm_words_per_row).bytes.data());
      const int64_t kept_count = (n + v - 1) / v * a.vnm_col_blocks * 4;
      a.vnm_columns = reinterpret_cast<const uint8_t*>(
          codec::expect_array(w, "columns", DType::U8, kept_count).bytes.data());
      // The kernels gather X at these offsets: one at or past M would read another block's
      // columns (or past X), so refuse it here. A max reduction (vectorised, ~1 us for a
      // 4096 x 4096 64:2:8 matrix) on every call; the loop that names the byte only on failure.
      uint8_t largest = 0;
      for (int64_t i = 0; i < kept_count; ++i) largest = std::max(largest, a.vnm_columns[i]);
      if (largest >= mm)
        for (int64_t i = 0; i < kept_count; ++i)
          if (a.vnm_columns[i] >= mm)
            fail("{}: array 'columns' byte {} holds offset {}, not below M = {}", who, i,
                 int{a.vnm_columns[i]}, mm);
      break;
    }
    default: {
      a.bitmap_words_per_row = (k + 63) / 64;
      a.bitmap = reinterpret_cast<const uint64_t*>(
          codec::expect_array(w, "bitmap", DType::U64, n * a.bitmap_words_per_row).bytes.data());
      a.row_ptr = layout.segment_ptr.data();
      if (group_ptr.empty()) group_ptr = codec::group_ptr(layout, w.codec.group_size);
      a.group_ptr = group_ptr.data();
      break;
    }
  }
  // X padded with zeros: bitmap chunks and nm windows may reach past K (by < 64 + 2 * 16).
  a.kp = (k + 63) / 64 * 64 + 64;
  auto xp = hwy::AllocateAligned<float>(static_cast<size_t>(m * a.kp));
  for (int64_t i = 0; i < m; ++i) {
    std::copy_n(x.data() + i * k, k, xp.get() + i * a.kp);
    std::fill(xp.get() + i * a.kp + k, xp.get() + (i + 1) * a.kp, 0.0f);
  }
  a.xp = xp.get();
  const bool x8 = options.int8_activations && has_int8_activation_kernel(w);
  if (backend == Backend::Reference)
    x8 ? cpu::codec_gemm_x8_reference(a) : cpu::codec_gemm_reference(a);
  else
    x8 ? cpu::codec_gemm_x8_simd(a) : cpu::codec_gemm_simd(a);
}

}  // namespace sparsa
