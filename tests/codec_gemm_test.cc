// Fused compressed kernels: the Highway kernels against their scalar reference twin on every
// SIMD target this CPU supports, and the twin against decode-then-dense (decompress, then the
// format's reference GEMM), for {dense, nm 2:4, bitmap, vnm V:2:M} x {int8, int4 (sym and asym,
// every group size), codebook4 (per channel and per tensor)} over random and ragged shapes,
// M = 1..16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "hwy/targets.h"
#include "sparsa/codec.h"
#include "sparsa/error.h"
#include "sparsa/kernels.h"
#include "sparse_matrices.h"
#include "test_util.h"

namespace sparsa {
namespace {

using test::expect_error;

struct FormatCase {
  const char* label;
  FormatKind format;
  Pattern pattern;
};

std::vector<FormatCase> format_cases() {
  return {{"dense", FormatKind::Dense, Pattern{}},
          {"2:4", FormatKind::NM, test::nm_pattern(2, 4)},
          {"bitmap 50%", FormatKind::Bitmap, test::unstructured_pattern(0.5)},
          {"bitmap 90%", FormatKind::Bitmap, test::unstructured_pattern(0.9)},
          // V:2:M: several row blocks at the test's row counts (V = 16), M odd and even, a
          // ragged last row block and column block in most shapes.
          {"vnm 16:2:8", FormatKind::VNM, test::vnm_pattern(16, 8)},
          {"vnm 32:2:5", FormatKind::VNM, test::vnm_pattern(32, 5)},
          {"vnm 64:2:16", FormatKind::VNM, test::vnm_pattern(64, 16)}};
}

const char* kCodecs[] = {"int8",     "int8:g32:asym", "int8:g64",      "int4",
                         "int4:g32", "int4:g64:asym", "int4:asym",     "codebook4",
                         "codebook4:tensor"};

// |Y - Y_ref| elementwise against a bound from sum |x| |w| (the error a float sum can make).
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<float>& scale, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - want[i]), 2e-6 * scale[i] + 1e-30) << what << " at " << i;
  }
}

// sum_k |x[m, k]| |w[n, k]| for the decoded weights: the scale of rounding differences.
std::vector<float> abs_products(const std::vector<float>& x, int64_t m, const Tensor& w) {
  const auto wf = w.to_f32();
  const int64_t n = w.rows(), k = w.cols();
  std::vector<float> out(m * n, 0.0f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double s = 0;
      for (int64_t c = 0; c < k; ++c) s += std::fabs(x[i * k + c]) * std::fabs(wf[r * k + c]);
      out[i * n + r] = static_cast<float>(s);
    }
  return out;
}

void check_case(const FormatCase& fc, const char* spec, int64_t m, int64_t n, int64_t k,
                uint64_t seed) {
  const Tensor dense =
      test::random_sparse_tensor("w", DType::F16, {n, k}, fc.pattern, seed);
  const PackedMatrix packed = pack(dense, fc.format, fc.pattern);
  const CompressedMatrix c = compress(packed, CodecParams::parse(spec));
  ASSERT_TRUE(has_fused_kernel(c)) << spec;
  const std::vector<float> x = test::random_values(m * k, seed + 3);
  const std::string what = fmt::format("{} {} M={} N={} K={}", fc.label, spec, m, n, k);

  // Decode-then-dense: the format's reference GEMM on the decompressed matrix, with the values
  // kept as the f32 the codec dequantises to (decompress() would round them to f16).
  PackedMatrix decoded = decompress(c);
  decoded.value_dtype = DType::F32;
  const std::vector<float> values = decode_values_f32(c);
  for (auto& a : decoded.arrays)
    if (a.name == "values") {
      a.dtype = DType::F32;
      a.bytes.resize(4 * values.size());
      std::memcpy(a.bytes.data(), values.data(), a.bytes.size());
    }
  std::vector<float> want(m * n, -1.0f), ref(m * n, -2.0f);
  gemm(x, m, decoded, want, Backend::Reference);
  compressed_gemm(x, m, c, ref, Backend::Reference);
  const auto scale = abs_products(x, m, unpack(decoded));
  expect_close(ref, want, scale, what + " reference twin vs decode-then-dense");

  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> got(m * n, 12345.0f);  // every entry must be written
    compressed_gemm(x, m, c, got, Backend::Simd);
    expect_close(got, ref, scale, what + " SIMD on " + hwy::TargetName(target));
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(CodecGemm, EveryFusedCombinationMatchesItsTwinsOnEveryTarget) {
  std::mt19937_64 rng(2026);
  uint64_t seed = 1;
  for (const auto& fc : format_cases())
    for (const char* spec : kCodecs) {
      // A few shapes per combination: ragged N and K, odd K (dense 4-bit rows starting
      // mid-byte), K past one bitmap word and several groups, and every M tile (1..16).
      const int64_t shapes[][3] = {{1, 1, 1},   {3, 5, 37},    {16, 7, 129},
                                   {2, 9, 300}, {5, 3, 64},    {13, 4, 257}};
      for (const auto& s : shapes) check_case(fc, spec, s[0], s[1], s[2], ++seed);
      const int64_t m = 1 + rng() % 16, n = 1 + rng() % 40, k = 1 + rng() % 400;
      check_case(fc, spec, m, n, k, ++seed);
    }
}

TEST(CodecGemm, LargeRowsWithManyGroups) {
  // Long rows: many groups and bitmap words per row, all M tiles at once.
  for (const auto& fc : format_cases())
    for (const char* spec : {"int8:g32", "int4:g128:asym", "codebook4"})
      check_case(fc, spec, 7, 33, 2048 + 17, 77);
}

TEST(CodecGemm, VnmEveryMAndRaggedRowBlocks) {
  // vnm gathers X's kept columns per row block (AVX-512: vpermt2ps over 32-float windows of X,
  // one per 4 column blocks for M <= 8, two for M <= 16, four up to 32, the codec's largest M;
  // one value at a time near the row's end). Every M regime, V = 1 / 3 / 16 (partial last row
  // blocks), K ragged (not a multiple of M, below one window, exact multiples of 8 M), M = 1..6.
  std::mt19937_64 rng(78);
  uint64_t seed = 2000;
  for (int vm : {4, 5, 8, 9, 13, 16, 17, 31, 32})
    for (int vv : {1, 3, 16}) {
      const FormatCase fc{"vnm", FormatKind::VNM, test::vnm_pattern(vv, vm)};
      for (const char* spec : {"int8", "int4:g64:asym", "codebook4"})
        for (int64_t k : {1 + static_cast<int64_t>(rng() % (70 * vm)), int64_t{8} * vm * 3,
                          1 + static_cast<int64_t>(rng() % (3 * vm))}) {
          const int64_t m = 1 + rng() % 6, n = 1 + rng() % 40;
          check_case(fc, spec, m, n, k, ++seed);
        }
    }
}

TEST(CodecGemm, DenseRowTilesAtSmallM) {
  // Small M (where a row-tiled kernel would differ; v5 tried one, see codec_gemm.cc): row
  // counts that leave ragged thread splits, even and odd K (4-bit rows pair nibbles only for
  // even K), full groups plus a partial one, every codec.
  const FormatCase dense = format_cases()[0];
  uint64_t seed = 500;
  for (const char* spec : kCodecs)
    for (int64_t m : {1, 2, 3})
      for (int64_t n : {4, 6, 7, 13})
        for (int64_t k : {256, 384 + 40, 511}) check_case(dense, spec, m, n, k, ++seed);
}

TEST(CodecGemm, DenseLaneBlocksEveryGroupSize) {
  // v7 dense rows: 4-bit codes read n per 32-bit lane (int4 g32/g64/g128: 2/4/8, codebook4:
  // 8) against X reordered per n*L-column block; int8 (natural order) alongside.
  // K = exact groups, a partial group after full ones, odd K (4-bit rows starting mid-byte);
  // M = 1 and a 4 + 2 tile.
  const FormatCase dense = format_cases()[0];
  uint64_t seed = 900;
  for (const char* spec : {"int8", "int8:g64", "int8:g32:asym", "int8:g128:asym", "int4:g32",
                           "int4:g64", "int4", "int4:g128:asym", "codebook4", "codebook4:tensor"})
    for (int64_t k : {128, 192, 640 + 33})
      for (int64_t m : {1, 6}) check_case(dense, spec, m, 3, k, ++seed);
}

TEST(CodecGemm, UnfusedCombinationsFallBackToDecodeThenGemm) {
  const Pattern p = test::nm_pattern(2, 8);
  const PackedMatrix packed =
      pack(test::random_sparse_tensor("w", DType::BF16, {9, 40}, p, 5), FormatKind::NM, p);
  for (const char* spec : {"int8", "codebook8", "codebook4:rans", "lossless"}) {
    const CompressedMatrix c = compress(packed, CodecParams::parse(spec));
    EXPECT_FALSE(has_fused_kernel(c)) << spec;
    const std::vector<float> x = test::random_values(3 * 40, 9);
    std::vector<float> got(3 * 9), want(3 * 9);
    compressed_gemm(x, 3, c, got);
    gemm(x, 3, decompress(c), want, Backend::Reference);
    EXPECT_LE(test::relative_error(got, want), 1e-5) << spec;
  }
  const PackedMatrix csr = pack(test::random_sparse_tensor("w", DType::F32, {4, 30},
                                                           test::unstructured_pattern(0.5), 6),
                                FormatKind::CSR, test::unstructured_pattern(0.5));
  EXPECT_FALSE(has_fused_kernel(compress(csr, CodecParams::parse("int4"))));
  EXPECT_TRUE(has_fused_kernel(compress(
      pack(test::random_tensor("w", DType::F32, {4, 30}, 1), FormatKind::Dense, Pattern{}),
      CodecParams::parse("codebook4:tensor"))));
}

TEST(CodecGemm, VnmColumnOffsetsAtOrPastMAreRefused) {
  // The fused V:2:M kernel gathers X at the kept-column offsets: an offset >= M would read
  // another block's columns (or past X), so a damaged 'columns' array is refused by name.
  const Pattern p = test::vnm_pattern(16, 8);
  const PackedMatrix packed =
      pack(test::random_sparse_tensor("w", DType::F16, {20, 70}, p, 11), FormatKind::VNM, p);
  CompressedMatrix c = compress(packed, CodecParams::parse("int4:g32"));
  ASSERT_TRUE(has_fused_kernel(c));
  c.packed.array("columns").bytes[5] = std::byte{8};
  std::vector<float> x = test::random_values(2 * 70, 3), y(2 * 20);
  for (Backend backend : {Backend::Reference, Backend::Simd})
    expect_error([&] { compressed_gemm(x, 2, c, y, backend); },
                 {"packed vnm matrix [20, 70]", "'columns' byte 5", "offset 8", "M = 8"});
}

TEST(CodecGemm, BadInputIsRefusedNamingTheProblem) {
  const Pattern p = test::unstructured_pattern(0.5);
  const PackedMatrix packed =
      pack(test::random_sparse_tensor("w", DType::F16, {6, 100}, p, 8), FormatKind::Bitmap, p);
  const CompressedMatrix c = compress(packed, CodecParams::parse("int4:g32"));
  std::vector<float> x = test::random_values(2 * 100, 3), y(2 * 6);
  expect_error([&] { compressed_gemm(std::span(x).first(150), 2, c, y); },
               {"int4:g32 codec on packed bitmap matrix [6, 100]", "x holds 150 floats"});
  expect_error([&] { compressed_gemm(x, 2, c, std::span(y).first(5)); }, {"y holds 5 floats"});
  // A bitmap whose bit count disagrees with row_ptr (one bit moved to another row).
  CompressedMatrix moved = c;
  auto& bits = moved.packed.array("bitmap").bytes;
  const size_t words = 2;  // per row: ceil(100 / 64)
  uint64_t w0, w1;
  std::memcpy(&w0, bits.data(), 8);
  std::memcpy(&w1, bits.data() + 8 * words, 8);
  const uint64_t low = w0 & -w0;
  w0 &= ~low;
  w1 |= ~w1 & -~w1;  // set row 1's lowest clear bit
  std::memcpy(bits.data(), &w0, 8);
  std::memcpy(bits.data() + 8 * words, &w1, 8);
  for (Backend backend : {Backend::Reference, Backend::Simd})
    expect_error([&] { compressed_gemm(x, 2, moved, y, backend); },
                 {"bitmap matrix [6, 100]", "row 0", "row_ptr"});
  CompressedMatrix short_scales = c;
  for (auto& a : short_scales.packed.arrays)
    if (a.name == "scales") a.bytes.resize(a.bytes.size() - 2);
  expect_error([&] { compressed_gemm(x, 2, short_scales, y); }, {"'scales'", "bytes, expected"});
}

}  // namespace
}  // namespace sparsa
