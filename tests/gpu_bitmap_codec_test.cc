// Bitmap decode kernels of session 5 (src/cuda/bitmap_decode.cu, bitmap_tiling.cc): bitmap x
// {codebook4 (per channel, per tensor, `rans` codes decoded at tiling), int8 / int4 with groups
// of 32 and 64 (sym / asym; the per-step pair words), int4 g128 read as packed nibbles} against a
// double-precision CPU product of the codec's own dequantised weights (rounded to fp16 like the
// packed values), at several densities, ragged N and K, m = 1..16, fp32 and fp16 outputs,
// NaN-poisoned y and padding, forced CTA counts (split row groups, one CTA for every unit).
// The host decode of the tiling must give the codec's values bit for bit (no GPU needed).
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "cuda/compressed_internal.h"
#include "gpu_compressed_util.h"
#include "gpu_sparse_util.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_compressed.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparse_matrices.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

constexpr double kTolerance = 1e-2;

const char* kSpecs[] = {"codebook4",     "codebook4:tensor", "int8:g32", "int8:g64:asym",
                        "int4:g32:asym", "int4:g64",         "int4:g32", "int8:g32:asym",
                        "int4:asym",     "int4:g64:asym"};

using Shape = CompressedShape;

CompressedMatrix make(double sparsity, const char* spec, int64_t n, int64_t k, uint64_t seed) {
  return random_compressed(unstructured_pattern(sparsity), FormatKind::Bitmap, spec, n, k, seed,
                           10);
}

void check(double sparsity, const char* spec, Shape s, int64_t m, ElemType y_type, int ctas,
           uint64_t seed) {
  SCOPED_TRACE(fmt::format("bitmap {}% pruned {} N={} K={} m={} y={} ctas={}", sparsity * 100, spec,
                           s.n, s.k, m, y_type == ElemType::F32 ? "f32" : "f16", ctas));
  const CompressedMatrix c = make(sparsity, spec, s.n, s.k, seed);
  expect_decode_matches(cuda::tile_compressed(c), dequantised(c), s, m, y_type, ctas, seed,
                        kTolerance);
}

const Shape kShapes[] = {{128, 256}, {100, 300}, {257, 1000}, {384, 2049}, {64, 4100}};

TEST(GpuBitmapCodec, MatchesDequantisedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(53);
  uint64_t seed = 11000;
  // 50% (the case), sparse (90% pruned) and nearly dense (10% pruned: the largest slots
  // and, for groups of 32, up to 9 groups per row and chunk).
  for (double sparsity : {0.5, 0.9, 0.1})
    for (const char* spec : kSpecs) {
      for (const Shape& s : kShapes) {
        const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
        check(sparsity, spec, s, m, rng() % 2 ? ElemType::F32 : ElemType::F16, 0, seed += 10);
      }
      check(sparsity, spec, {512, 3000}, 16, ElemType::F32, 7, seed += 10);  // shared row groups
      check(sparsity, spec, {256, 1100}, 1, ElemType::F16, 1, seed += 10);   // one CTA
      check(sparsity, spec, {300, 777}, 9, ElemType::F16, 5, seed += 10);
    }
}

TEST(GpuBitmapCodec, DenseBitmapEveryGroupSize) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 12000;
  // Nothing pruned: every step of every row is full, so groups of 32 change at every step.
  for (const char* spec : {"int8:g32", "int4:g32:asym", "int8:g64:asym", "int4:g64", "codebook4"})
    for (int64_t m : {1, 9, 16})
      check(0.0, spec, {200, 1300}, m, m % 2 ? ElemType::F32 : ElemType::F16, 0, seed += 10);
}

TEST(GpuBitmapCodec, EveryTokenCount) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 13000;
  for (int64_t m = 1; m <= 16; ++m) {
    check(0.5, "codebook4", {200, 700}, m, ElemType::F32, 0, seed += 10);
    check(0.5, "codebook4:tensor", {136, 900}, m, ElemType::F16, 3, seed += 10);
    check(0.5, "int4:g32:asym", {130, 1500}, m, ElemType::F16, 4, seed += 10);
    check(0.5, "int8:g64", {200, 700}, m, ElemType::F32, 0, seed += 10);
    check(0.5, "int4", {200, 700}, m, ElemType::F16, 0, seed += 10);
  }
}

TEST(GpuBitmapCodec, RansCodebookCodesDecodedAtTiling) {
  SPARSA_SKIP_WITHOUT_GPU();
  check(0.5, "codebook4:rans", {257, 1000}, 3, ElemType::F32, 0, 14000);
  check(0.5, "codebook4:tensor:rans", {100, 2049}, 16, ElemType::F16, 0, 14010);
}

// Session 21: the LUT expansion (bitmap_lut.cuh; int8 / int4 / codebook4 / fp16 values) gives
// the per-position expansion's outputs bit for bit: the same fp16 weights, multiplied in the same
// order. Every group layout (groups of 128: the three-pair head; 32 / 64: step words), sym and
// asym, per-channel and per-tensor books, densities from empty rows to nothing pruned, ragged
// shapes, one and two token tiles, f32 / f16 outputs, split row groups; plus the benchmark's
// random tilings.
std::vector<float> decode_with_expansion(const cuda::DeviceCompressed& dev, const Activations& x,
                                         int64_t n, ElemType y_type, int ctas, int expansion,
                                         const std::vector<float>& ref) {
  cuda::detail::set_bitmap_expansion(expansion);
  EXPECT_EQ(cuda::detail::bitmap_expansion(), expansion);
  return checked_decode(dev.weights, x, n, y_type, ctas, ref, kTolerance);
}

void expect_expansions_agree(const cuda::CompressedTiled& tiled, const std::vector<float>& dense,
                             Shape s, int64_t m, ElemType y_type, int ctas, uint64_t seed) {
  const auto dev = cuda::upload(tiled);
  const Activations x = random_activations(m, s.k, ElemType::F16, seed + 1);
  const std::vector<float> ref = reference_dense(x, dense, s.n);
  const auto lut = decode_with_expansion(dev, x, s.n, y_type, ctas, cuda::detail::kBitmapLut, ref);
  const auto positions =
      decode_with_expansion(dev, x, s.n, y_type, ctas, cuda::detail::kBitmapPositions, ref);
  cuda::detail::set_bitmap_expansion(cuda::detail::kBitmapDefault);
  EXPECT_EQ(differing_outputs(lut, positions), 0);
}

TEST(GpuBitmapCodec, LutExpansionEqualsPositions) {
  SPARSA_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(71);
  uint64_t seed = 17000;
  const char* specs[] = {"int8",      "int8:asym",       "int4",          "int4:asym",
                         "int8:g32",  "int8:g64:asym",   "int4:g32:asym", "int4:g64",
                         "codebook4", "codebook4:tensor"};
  const Shape shapes[] = {{128, 256}, {100, 300}, {257, 1000}, {64, 4100}, {200, 1300}};
  for (double sparsity : {0.5, 0.0, 0.1, 0.75, 0.97})
    for (const char* spec : specs)
      for (const Shape& sh : shapes) {
        const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
        const int ctas = rng() % 3 == 0 ? 1 + static_cast<int>(rng() % 7) : 0;
        const ElemType y = rng() % 2 ? ElemType::F32 : ElemType::F16;
        SCOPED_TRACE(fmt::format("bitmap {}% pruned {} N={} K={} m={} ctas={}", sparsity * 100,
                                 spec, sh.n, sh.k, m, ctas));
        const CompressedMatrix c = make(sparsity, spec, sh.n, sh.k, seed += 10);
        expect_expansions_agree(cuda::tile_compressed(c), dequantised(c), sh, m, y, ctas, seed);
      }
  // fp16 values (tile_bitmap of a packed bitmap matrix, no codec).
  for (double sparsity : {0.5, 0.0, 0.9})
    for (const Shape& sh : shapes) {
      const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
      const int ctas = rng() % 3 == 0 ? 1 + static_cast<int>(rng() % 7) : 0;
      SCOPED_TRACE(fmt::format("bitmap {}% pruned f16 N={} K={} m={} ctas={}", sparsity * 100, sh.n,
                               sh.k, m, ctas));
      const Pattern pattern = unstructured_pattern(sparsity);
      const Tensor w = random_sparse_tensor("w", DType::F16, {sh.n, sh.k}, pattern, seed += 10);
      const PackedMatrix pk = pack(w, FormatKind::Bitmap, pattern);
      expect_expansions_agree(cuda::tile_bitmap(pk), unpack(pk).to_f32(), sh, m,
                              m % 2 ? ElemType::F32 : ElemType::F16, ctas, seed);
    }
  for (auto code : {cuda::CodeType::Codebook4, cuda::CodeType::Int4, cuda::CodeType::Int8})
    for (int group : {32, 128})
      for (int64_t m : {1, 16}) {
        SCOPED_TRACE(
            fmt::format("random tiling code {} group {} m={}", static_cast<int>(code), group, m));
        const Shape sh{300, 2000};
        const auto t =
            cuda::random_bitmap_tiled(sh.n, sh.k, 50, code, group, group == 32, false, seed += 10);
        std::vector<float> dense;
        for (int64_t r = 0; r < sh.n; ++r) {
          const auto row = cuda::compressed_tiled_row(t, r);
          dense.insert(dense.end(), row.begin(), row.begin() + sh.k);
        }
        expect_expansions_agree(t, dense, sh, m, ElemType::F32, 0, seed);
      }
}

// No GPU needed: decoding the tiling on the host gives the codec's dequantised fp16 values.
TEST(GpuBitmapCodec, TilingDecodesToTheCodecValues) {
  uint64_t seed = 15000;
  for (double sparsity : {0.5, 0.9, 0.0})
    for (const char* spec : kSpecs)
      for (const Shape& s : {Shape{130, 300}, Shape{16, 37}, Shape{64, 1030}}) {
        SCOPED_TRACE(fmt::format("{} {} N={} K={}", sparsity, spec, s.n, s.k));
        const CompressedMatrix c = make(sparsity, spec, s.n, s.k, seed += 10);
        const auto tiled = cuda::tile_compressed(c);
        const auto want = dequantised(c);
        expect_tiling_decodes_to(tiled, want, s);
        EXPECT_TRUE(tiled.bitmap);
        EXPECT_EQ(tiled.offsets.size(),
                  static_cast<size_t>(tiled.rows_padded / 16 * tiled.kchunks + 1));
        EXPECT_EQ(int64_t{tiled.offsets.back()} * 16, static_cast<int64_t>(tiled.tiles.size()));
      }
}

// 4-bit codes are read packed: the tiling of a 4-bit matrix holds about half the value bytes
// of the same matrix's int8 tiling (masks and pairs aside).
TEST(GpuBitmapCodec, FourBitCodesStayPacked) {
  const CompressedMatrix c8 = make(0.5, "int8", 256, 2048, 16000);
  const CompressedMatrix c4 = make(0.5, "int4", 256, 2048, 16000);
  const CompressedMatrix cb = make(0.5, "codebook4", 256, 2048, 16000);
  const auto t8 = cuda::tile_compressed(c8), t4 = cuda::tile_compressed(c4),
             tb = cuda::tile_compressed(cb);
  const int64_t slots = t8.rows_padded / 16 * t8.kchunks;
  const int64_t kept = c8.packed.as<int64_t>("row_ptr").back();
  // head: masks 512 (+ pairs 256) per slot; values: kept bytes (int8) or kept / 2 (4-bit).
  EXPECT_LE(static_cast<int64_t>(t8.tiles.size()), slots * (768 + 15) + kept);
  EXPECT_GE(static_cast<int64_t>(t8.tiles.size()), slots * 768 + kept);
  EXPECT_LE(static_cast<int64_t>(t4.tiles.size()), slots * (768 + 15) + kept / 2 + slots);
  EXPECT_GE(static_cast<int64_t>(t4.tiles.size()), slots * 768 + kept / 2);
  EXPECT_LE(static_cast<int64_t>(tb.tiles.size()), slots * (512 + 15) + kept / 2 + slots);
  EXPECT_EQ(tb.books.size(), static_cast<size_t>(tb.rows_padded * 32));
}

TEST(GpuBitmapCodec, TilingRejectsWhatNoKernelRuns) {
  const Tensor w = random_sparse_tensor("w", DType::F16, {32, 64}, unstructured_pattern(0.5), 6);
  const PackedMatrix bm = pack(w, FormatKind::Bitmap, unstructured_pattern(0.5));
  for (const char* spec : {"codebook8", "lossless", "zstd"}) {
    SCOPED_TRACE(spec);
    expect_error([&] { cuda::tile_compressed(compress(bm, CodecParams::parse(spec))); },
                 {"bitmap", "[32, 64]", "int8, int4 or codebook4 codes"});
  }
  const Tensor bf = random_sparse_tensor("w", DType::BF16, {32, 64}, unstructured_pattern(0.5), 8);
  expect_error([&] { cuda::tile_bitmap(pack(bf, FormatKind::Bitmap, unstructured_pattern(0.5))); },
               {"bitmap", "[32, 64]", "f16 values"});
}

TEST(GpuBitmapCodec, RandomBenchmarkTilingDecodes) {
  // The benchmark's random tilings go through the same builder; their host decode must agree
  // with itself across codes (non-zero, finite) and have the kernels' layout.
  for (auto code : {cuda::CodeType::Codebook4, cuda::CodeType::Int4, cuda::CodeType::Int8})
    for (int group : {32, 128}) {
      SCOPED_TRACE(fmt::format("code {} group {}", static_cast<int>(code), group));
      const auto t = cuda::random_bitmap_tiled(100, 700, 50, code, group, group == 32, false, 3);
      EXPECT_EQ(t.offsets.size(), static_cast<size_t>(t.rows_padded / 16 * t.kchunks + 1));
      double nonzero = 0;
      for (int64_t r = 0; r < t.rows; ++r)
        for (float v : cuda::compressed_tiled_row(t, r)) {
          ASSERT_TRUE(std::isfinite(v));
          nonzero += v != 0;
        }
      EXPECT_GT(nonzero, 0.4 * 100 * 700);
      EXPECT_LT(nonzero, 0.6 * 100 * 700);
    }
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
