// Integer-activation kernels (CompressedGemmOptions::int8_activations): the SIMD kernels on
// every target this CPU supports (AVX3_DL = VNNI included) against their scalar reference twin,
// and the twin's error against the f32 product of the dequantised weights within the bound that
// X's rounding allows, for {dense, nm 2:4, bitmap} x {int8, int4, sym and asym, every group size} over
// random and ragged shapes, M = 1..16; codebook4 (its codebook rounded to int8 too) alike.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>

#include "hwy/targets.h"
#include "sparsa/codec.h"
#include "sparsa/half.h"
#include "sparsa/kernels.h"
#include "sparse_matrices.h"
#include "test_util.h"

namespace sparsa {
namespace {

constexpr CompressedGemmOptions kX8{.int8_activations = true};

const char* kCodecs[] = {"int8", "int8:asym", "int8:g32", "int8:g32:asym", "int8:g64", "int8:g64:asym", "int4",
                         "int4:g32",  "int4:g64:asym", "int4:asym", "int4:g32:asym",
                         "codebook4", "codebook4:tensor"};

const FormatKind kFormats[] = {FormatKind::Dense, FormatKind::NM, FormatKind::Bitmap};
// vnm (16:2:8: several row blocks at these row counts) quantises X per 32 *gathered* columns of
// each row block, so the per-original-block rounding bound below does not apply to it; it is
// checked against its twin and, loosely, against the f32-activation product.
const FormatKind kTwinFormats[] = {FormatKind::Dense, FormatKind::NM, FormatKind::Bitmap,
                                   FormatKind::VNM};

struct Case {
  std::string what;
  CompressedMatrix c;
  std::vector<float> x;        // [m, k]
  std::vector<float> w;        // dequantised weights, [n, k] (zeros where pruned)
  int64_t m, n, k;
};

// Bitmap weights at `density` (kept fraction) of unstructured sparsity.
// vnm: V:2:M = vnm_v:2:vnm_m.
Case make_case(FormatKind f, const char* spec, int64_t m, int64_t n, int64_t k, uint64_t seed,
               double density = 0.5, int vnm_v = 16, int vnm_m = 8) {
  const Pattern p = f == FormatKind::NM       ? test::nm_pattern(2, 4)
                    : f == FormatKind::Bitmap ? test::unstructured_pattern(1.0 - density)
                    : f == FormatKind::VNM    ? test::vnm_pattern(vnm_v, vnm_m)
                                              : Pattern{};
  const Tensor dense = test::random_sparse_tensor("w", DType::F16, {n, k}, p, seed);
  const std::string fname = f == FormatKind::NM       ? "2:4"
                            : f == FormatKind::Bitmap ? fmt::format("bitmap{:.0f}", 100 * density)
                            : f == FormatKind::VNM    ? fmt::format("vnm {}:2:{}", vnm_v, vnm_m)
                                                      : "dense";
  Case cs{fmt::format("{} {} M={} N={} K={}", fname, spec, m, n, k),
          compress(pack(dense, f, p), CodecParams::parse(spec)), test::random_values(m * k, seed + 7),
          {}, m, n, k};
  PackedMatrix decoded = decompress(cs.c);
  decoded.value_dtype = DType::F32;
  const std::vector<float> values = decode_values_f32(cs.c);
  for (auto& a : decoded.arrays)
    if (a.name == "values") {
      a.dtype = DType::F32;
      a.bytes.resize(4 * values.size());
      std::memcpy(a.bytes.data(), values.data(), a.bytes.size());
    }
  cs.w = unpack(decoded).to_f32();
  return cs;
}

// sum_k |x[i, k]| |w[r, k]|: the scale of f32 rounding differences.
std::vector<double> abs_products(const Case& cs) {
  std::vector<double> out(cs.m * cs.n, 0.0);
  for (int64_t i = 0; i < cs.m; ++i)
    for (int64_t r = 0; r < cs.n; ++r)
      for (int64_t c = 0; c < cs.k; ++c)
        out[i * cs.n + r] += std::fabs(cs.x[i * cs.k + c]) * std::fabs(cs.w[r * cs.k + c]);
  return out;
}

// sum_k |w[r, k]| s_k / 2, s_k = max|x| over k's 32-column block / 127: what X's rounding to
// int8 can change in y (each |x - s q| <= s / 2). codebook4 also rounds its codebook to int8
// (step c = max|codebook| / 127): + sum_k |x_k| (c / 2) (1 + 1 / 254) for the kept weights.
std::vector<double> rounding_bound(const Case& cs) {
  std::vector<double> out(cs.m * cs.n, 0.0);
  if (cs.c.codec.kind == CodecKind::Codebook4) {
    const auto& bytes = cs.c.packed.array("codebook").bytes;
    for (int64_t r = 0; r < cs.n; ++r) {
      const int64_t book = cs.c.codec.per_channel ? r : 0;
      double cmax = 0;
      for (int k = 0; k < 16; ++k) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * (16 * book + k), 2);
        cmax = std::max<double>(cmax, std::fabs(f32_from_f16(h)));
      }
      for (int64_t i = 0; i < cs.m; ++i)
        for (int64_t c = 0; c < cs.k; ++c)
          if (cs.w[r * cs.k + c] != 0.0f)
            out[i * cs.n + r] += std::fabs(cs.x[i * cs.k + c]) * cmax / 254 * (1 + 1.0 / 254);
    }
  }
  for (int64_t i = 0; i < cs.m; ++i)
    for (int64_t b = 0; b < cs.k; b += 32) {
      float amax = 0;
      for (int64_t c = b; c < std::min(cs.k, b + 32); ++c)
        amax = std::max(amax, std::fabs(cs.x[i * cs.k + c]));
      const double half_step = amax / 127.0 / 2;
      for (int64_t r = 0; r < cs.n; ++r)
        for (int64_t c = b; c < std::min(cs.k, b + 32); ++c)
          out[i * cs.n + r] += half_step * std::fabs(cs.w[r * cs.k + c]);
    }
  return out;
}

// The SIMD kernels (every supported target) against the reference twin: the same exact integer
// block sums, so they differ by f32 summation order only: <= 1e-5 sum |x| |w|.
void check_twin(const Case& cs) {
  std::vector<float> ref(cs.m * cs.n, -2.0f);
  compressed_gemm(cs.x, cs.m, cs.c, ref, Backend::Reference, kX8);
  const auto scale = abs_products(cs);
  int64_t targets = 0;
  for (int64_t bits = hwy::SupportedTargets(); bits != 0; bits &= bits - 1) {
    const int64_t target = bits & -bits;
    hwy::SetSupportedTargetsForTest(target);
    std::vector<float> got(cs.m * cs.n, 12345.0f);  // every entry must be written
    compressed_gemm(cs.x, cs.m, cs.c, got, Backend::Simd, kX8);
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_LE(std::fabs(got[i] - ref[i]), 1e-5 * scale[i] + 1e-30)
          << cs.what << " SIMD on " << hwy::TargetName(target) << " at " << i << ": " << got[i]
          << " vs twin " << ref[i];
    ++targets;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GT(targets, 0);
}

TEST(CodecGemmX8, SimdMatchesTheReferenceTwinOnEveryTarget) {
  std::mt19937_64 rng(2026);
  uint64_t seed = 10;
  for (FormatKind f : kTwinFormats)
    for (const char* spec : kCodecs) {
      // Ragged N and K: below one chunk, odd K (dense 4-bit rows starting mid-byte), exact
      // chunks, chunks plus a partial group; every M tile (4, 2, 1).
      const int64_t shapes[][3] = {{1, 1, 1},   {3, 5, 37},   {16, 7, 129}, {2, 9, 300},
                                   {5, 3, 128}, {1, 4, 512},  {7, 6, 640 + 33}, {1, 3, 1024},
                                   {4, 6, 384}};
      for (const auto& s : shapes) check_twin(make_case(f, spec, s[0], s[1], s[2], ++seed));
      for (int rep = 0; rep < 2; ++rep) {
        const int64_t m = 1 + rng() % 16, n = 1 + rng() % 24, k = 1 + rng() % 700;
        check_twin(make_case(f, spec, m, n, k, ++seed));
      }
    }
}

TEST(CodecGemmX8, ZeroBlocksOfXAndLongRows) {
  // A 32-column block of X all zero (its scale 0) inside random data, and rows with many
  // chunks and groups.
  for (FormatKind f : kTwinFormats)
    for (const char* spec : {"int8:g32", "int4:g128:asym", "int8:asym", "int4:g64"}) {
      Case cs = make_case(f, spec, 5, 9, 2048 + 17, 300);
      for (int64_t c = 64; c < 96; ++c) cs.x[1 * cs.k + c] = 0.0f;
      check_twin(cs);
    }
}

TEST(CodecGemmX8, ErrorAgainstF32ProductStaysWithinXRoundingBound) {
  // y_x8 - y_f32 is X's rounding times the dequantised weights: |.| <= sum |w| s / 2 (plus f32
  // summation error); on random data the relative error is about 0.2-0.5%, never 0 (the int8
  // path really ran).
  uint64_t seed = 700;
  for (FormatKind f : kFormats)
    for (const char* spec : {"int8", "int8:g32:asym", "int4", "int4:g64:asym", "codebook4",
                             "codebook4:tensor"})
      for (const auto& s : {std::array<int64_t, 3>{1, 16, 1024}, {4, 11, 333}, {16, 5, 257}}) {
        const Case cs = make_case(f, spec, s[0], s[1], s[2], ++seed);
        std::vector<float> f32(cs.m * cs.n), x8(cs.m * cs.n), simd(cs.m * cs.n);
        compressed_gemm(cs.x, cs.m, cs.c, f32, Backend::Reference);
        compressed_gemm(cs.x, cs.m, cs.c, x8, Backend::Reference, kX8);
        compressed_gemm(cs.x, cs.m, cs.c, simd, Backend::Simd, kX8);
        const auto bound = rounding_bound(cs);
        const auto scale = abs_products(cs);
        for (size_t i = 0; i < x8.size(); ++i) {
          ASSERT_LE(std::fabs(x8[i] - f32[i]), bound[i] + 1e-5 * scale[i] + 1e-30)
              << cs.what << " twin at " << i;
          ASSERT_LE(std::fabs(simd[i] - f32[i]), bound[i] + 2e-5 * scale[i] + 1e-30)
              << cs.what << " SIMD at " << i;
        }
        const double rel = test::relative_error(simd, f32);
        EXPECT_GT(rel, 0.0) << cs.what;
        EXPECT_LT(rel, 0.02) << cs.what;
      }
}

TEST(CodecGemmX8, VnmStaysCloseToTheF32ActivationProduct) {
  // vnm under int8 activations: X's rounding only (relative error ~0.2-0.5% on random data, as
  // for the other formats), never 0 (the int8 path ran), SIMD and twin alike.
  uint64_t seed = 800;
  for (const char* spec : {"int8", "int8:g32:asym", "int4", "int4:g64:asym", "codebook4"})
    for (const auto& s : {std::array<int64_t, 3>{1, 40, 1024}, {4, 35, 333}, {16, 17, 257}}) {
      const Case cs = make_case(FormatKind::VNM, spec, s[0], s[1], s[2], ++seed);
      std::vector<float> f32(cs.m * cs.n), x8(cs.m * cs.n), simd(cs.m * cs.n);
      compressed_gemm(cs.x, cs.m, cs.c, f32, Backend::Reference);
      compressed_gemm(cs.x, cs.m, cs.c, x8, Backend::Reference, kX8);
      compressed_gemm(cs.x, cs.m, cs.c, simd, Backend::Simd, kX8);
      for (const auto* y : {&x8, &simd}) {
        const double rel = test::relative_error(*y, f32);
        EXPECT_GT(rel, 0.0) << cs.what;
        EXPECT_LT(rel, 0.02) << cs.what;
      }
    }
}

TEST(CodecGemmX8, VnmEveryMAndRaggedRowBlocks) {
  // vnm gathers X's kept columns per row block (AVX3_DL: vpermt2ps over 32-float windows of X,
  // one window per 4 column blocks for M <= 8, two for M <= 16, four up to 32, the codec's
  // largest M; one value at a time near the row's end: partial groups of 4 column blocks,
  // windows past X's padding; other targets through an f32 copy). Every M regime, V = 1 / 3 / 16
  // (partial last row blocks), K ragged (not a multiple of M, below one window, exact multiples
  // of 8 M), M = 1..6.
  std::mt19937_64 rng(77);
  uint64_t seed = 1000;
  for (int vm : {4, 5, 8, 9, 13, 16, 17, 31, 32})
    for (int vv : {1, 3, 16})
      for (const char* spec : {"int8", "int8:g32:asym", "int4", "int4:g64:asym", "codebook4",
                               "codebook4:tensor"}) {
        const int64_t ks[] = {1 + static_cast<int64_t>(rng() % (70 * vm)), 8 * vm * 3,
                              1 + static_cast<int64_t>(rng() % (3 * vm))};
        for (int64_t k : ks) {
          const int64_t m = 1 + rng() % 6, n = 1 + rng() % 40;
          check_twin(make_case(FormatKind::VNM, spec, m, n, k, ++seed, 0.5, vv, vm));
        }
      }
}

TEST(CodecGemmX8, BitmapDensitiesAndGroupEndsInsideWords) {
  // Bitmap groups count values, so a group ends anywhere inside a 64-column word (twice with
  // g32 at high density) and a 32-column block holds two groups: every density from nearly
  // empty rows (empty words) to nearly full, every group size, sym and asym, odd value offsets
  // of 4-bit codes (rows start at any value), M = 1, 2, 3, 4 and 7.
  uint64_t seed = 900;
  for (double density : {0.03, 0.3, 0.5, 0.8, 0.97})
    for (const char* spec : {"int8:g32", "int8:g64:asym", "int8:asym", "int4:g32", "int4:g32:asym",
                             "int4:g64", "int4:asym", "codebook4", "codebook4:tensor"})
      for (const auto& s : {std::array<int64_t, 3>{1, 13, 1000}, {2, 7, 640}, {3, 5, 191},
                            {4, 6, 4096 + 7}, {7, 3, 300}})
        check_twin(make_case(FormatKind::Bitmap, spec, s[0], s[1], s[2], ++seed, density));
}

TEST(CodecGemmX8, OtherCombinationsIgnoreTheOptionAndBadInputIsRefused) {
  const Pattern half = test::unstructured_pattern(0.5);
  const PackedMatrix bitmap =
      pack(test::random_sparse_tensor("w", DType::F16, {6, 100}, half, 8), FormatKind::Bitmap, half);
  const PackedMatrix dense =
      pack(test::random_tensor("w", DType::F16, {6, 100}, 9), FormatKind::Dense, Pattern{});
  const std::vector<float> x = test::random_values(2 * 100, 3);
  for (const auto& [packed, spec] : {std::pair{&dense, "codebook8"}, {&bitmap, "codebook8"}}) {
    const CompressedMatrix c = compress(*packed, CodecParams::parse(spec));
    EXPECT_FALSE(has_int8_activation_kernel(c)) << spec;
    std::vector<float> plain(12), opt(12);
    compressed_gemm(x, 2, c, plain, Backend::Simd);
    compressed_gemm(x, 2, c, opt, Backend::Simd, kX8);
    EXPECT_EQ(plain, opt) << spec;
  }
  const CompressedMatrix c = compress(dense, CodecParams::parse("int4:g32"));
  EXPECT_TRUE(has_int8_activation_kernel(c));
  std::vector<float> y(2 * 6);
  test::expect_error([&] { compressed_gemm(std::span(x).first(150), 2, c, y, Backend::Simd, kX8); },
                     {"int4:g32 codec on packed dense matrix [6, 100]", "x holds 150 floats"});
  test::expect_error([&] { compressed_gemm(x, 2, c, std::span(y).first(5), Backend::Simd, kX8); },
                     {"y holds 5 floats"});
  // A bitmap whose bit count disagrees with row_ptr: one bit moved from row 0 to row 1, and the
  // last row given one bit more than its values (the kernel must stop before its codes end).
  for (const char* spec : {"int8", "int4:g32:asym", "codebook4"}) {
    const CompressedMatrix b = compress(bitmap, CodecParams::parse(spec));
    EXPECT_TRUE(has_int8_activation_kernel(b)) << spec;
    const size_t words = 2;  // per row: ceil(100 / 64)
    CompressedMatrix moved = b, extra = b;
    auto& bits = moved.packed.array("bitmap").bytes;
    uint64_t w0, w1;
    std::memcpy(&w0, bits.data(), 8);
    std::memcpy(&w1, bits.data() + 8 * words, 8);
    w0 &= w0 - 1;      // clear row 0's lowest set bit
    w1 |= ~w1 & -~w1;  // set row 1's lowest clear bit
    std::memcpy(bits.data(), &w0, 8);
    std::memcpy(bits.data() + 8 * words, &w1, 8);
    auto& last = extra.packed.array("bitmap").bytes;
    uint64_t wl;
    std::memcpy(&wl, last.data() + 8 * (5 * words), 8);
    wl |= ~wl & -~wl;
    std::memcpy(last.data() + 8 * (5 * words), &wl, 8);
    for (Backend backend : {Backend::Reference, Backend::Simd}) {
      test::expect_error([&] { compressed_gemm(x, 2, moved, y, backend, kX8); },
                         {"bitmap matrix [6, 100]", "row 0", "row_ptr"});
      test::expect_error([&] { compressed_gemm(x, 2, extra, y, backend, kX8); },
                         {"bitmap matrix [6, 100]", "row 5", "row_ptr"});
    }
  }
}

}  // namespace
}  // namespace sparsa
