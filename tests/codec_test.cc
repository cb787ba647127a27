// Codecs: specs, lossless round trips bit-exact, lossy round trips within derived error bounds,
// over every format x value dtype x many random (ragged) shapes; k-means on planted clusters;
// rANS streams; bits-per-weight accounting; errors for bad input and damaged arrays.
#include "sparsa/codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <utility>
#include <cmath>
#include <cstring>
#include <random>

#include "codec/codec_internal.h"
#include "sparsa/error.h"
#include "sparsa/half.h"
#include "sparse_matrices.h"
#include "test_util.h"

namespace sparsa {
namespace {

constexpr DType kValueDTypes[] = {DType::F32, DType::F16, DType::BF16};

using test::expect_error;

// A random packed matrix of `format`, ragged shapes included.
PackedMatrix random_packed(FormatKind format, DType dtype, uint64_t seed, int64_t max_rows = 40,
                           int64_t max_cols = 150) {
  std::mt19937_64 rng(seed);
  const int64_t rows = 1 + rng() % max_rows, cols = 1 + rng() % max_cols;
  const Pattern pattern = test::random_pattern_for(format, rng);
  const Tensor dense = test::random_sparse_tensor("w", dtype, {rows, cols}, pattern, seed + 1);
  return pack(dense, format, pattern);
}

// The segments of sparsa/codec.h, derived here independently of the codec code: one per row
// (one per block row for bsr), with the row's number of stored values.
std::vector<int64_t> segment_lengths(const PackedMatrix& p) {
  std::vector<int64_t> len;
  auto from_ptr = [&](std::string_view name, int64_t scale) {
    const auto ptr = p.as<int64_t>(name);
    for (size_t i = 0; i + 1 < ptr.size(); ++i) len.push_back((ptr[i + 1] - ptr[i]) * scale);
  };
  switch (p.format) {
    case FormatKind::Dense:
      len.assign(p.rows, p.cols);
      break;
    case FormatKind::CSR:
    case FormatKind::Bitmap:
      from_ptr("row_ptr", 1);
      break;
    case FormatKind::BSR:
      from_ptr("block_row_ptr", p.pattern.block_rows * p.pattern.block_cols);
      break;
    case FormatKind::NM:
      len.assign(p.rows, (p.cols + p.pattern.m - 1) / p.pattern.m * p.pattern.n);
      break;
    case FormatKind::VNM:
      len.assign(p.rows, (p.cols + p.pattern.m - 1) / p.pattern.m * 2);
      break;
  }
  return len;
}

// Group index of every value for groups of G along each segment.
std::vector<int64_t> value_groups(const PackedMatrix& p, int G) {
  std::vector<int64_t> group;
  int64_t next = 0;
  for (int64_t len : segment_lengths(p)) {
    for (int64_t j = 0; j < len; ++j) group.push_back(next + j / G);
    next += (len + G - 1) / G;
  }
  return group;
}

std::vector<float> original_values(const PackedMatrix& p) {
  return codec::array_f32(p.array("values"));
}

bool same_arrays(const PackedMatrix& a, const PackedMatrix& b) {
  if (a.arrays.size() != b.arrays.size()) return false;
  for (size_t i = 0; i < a.arrays.size(); ++i)
    if (a.arrays[i].name != b.arrays[i].name || a.arrays[i].dtype != b.arrays[i].dtype ||
        a.arrays[i].bytes != b.arrays[i].bytes)
      return false;
  return a.format == b.format && a.rows == b.rows && a.cols == b.cols &&
         a.value_dtype == b.value_dtype && a.pattern == b.pattern;
}

// ---- specs -------------------------------------------------------------------------------------

TEST(CodecSpec, CanonicalSpecsRoundTrip) {
  for (const char* spec :
       {"lossless", "zstd", "zstd:l19", "int8", "int8:g32", "int8:g64:asym", "int4", "int4:asym",
        "codebook4", "codebook4:tensor", "codebook8:rans", "codebook4:tensor:rans:seed=7:iters=5"}) {
    const CodecParams p = CodecParams::parse(spec);
    EXPECT_EQ(p.to_string(), spec);
    EXPECT_EQ(CodecParams::parse(p.to_string()), p);
  }
  const CodecParams p = CodecParams::parse("int4:asym:g32");
  EXPECT_EQ(p.kind, CodecKind::Int4);
  EXPECT_EQ(p.group_size, 32);
  EXPECT_FALSE(p.symmetric);
  EXPECT_EQ(p.to_string(), "int4:g32:asym");
  EXPECT_EQ(CodecParams::parse("int8:g128:sym").to_string(), "int8");
}

TEST(CodecSpec, TableHasOneRowPerCodec) {
  ASSERT_EQ(all_codecs().size(), 6u);
  for (const auto& row : all_codecs()) {
    EXPECT_EQ(parse_codec_name(row.name), row.kind);
    EXPECT_EQ(&codec_traits(row.kind), &row);
    EXPECT_EQ(row.lossless, row.kind == CodecKind::Lossless || row.kind == CodecKind::Zstd);
  }
}

TEST(CodecSpec, BadSpecsNameTheSpecAndTheProblem) {
  expect_error([] { CodecParams::parse("int3"); }, {"'int3'", "unknown codec", "int4"});
  expect_error([] { CodecParams::parse("int4:g48"); }, {"'int4:g48'", "group size 48"});
  expect_error([] { CodecParams::parse("int8:tensor"); }, {"'int8:tensor'", "unknown option"});
  expect_error([] { CodecParams::parse("codebook4:g64"); }, {"'codebook4:g64'", "'g64'"});
  expect_error([] { CodecParams::parse("codebook8:seed=x"); }, {"seed 'x'"});
  expect_error([] { CodecParams::parse("zstd:l40"); }, {"'zstd:l40'", "level 40"});
  expect_error([] { CodecParams::parse("lossless:fast"); }, {"'lossless:fast'", "'fast'"});
  expect_error([] { CodecParams::parse("int4:"); }, {"'int4:'", "empty option"});
  expect_error([] { CodecParams::parse("int4::asym"); }, {"empty option"});
}

// ---- lossless ----------------------------------------------------------------------------------

TEST(LosslessCodecs, EveryFormatDtypeAndShapeIsBitExact) {
  uint64_t seed = 100;
  for (const char* spec : {"lossless", "zstd", "zstd:l1"})
    for (const auto& format : all_formats())
      for (DType dtype : kValueDTypes)
        for (int trial = 0; trial < 6; ++trial) {
          const PackedMatrix packed = random_packed(format.kind, dtype, ++seed);
          const CompressedMatrix c = compress(packed, CodecParams::parse(spec));
          EXPECT_FALSE(std::any_of(c.packed.arrays.begin(), c.packed.arrays.end(),
                                   [](const PackedArray& a) { return a.name == "values"; }));
          EXPECT_TRUE(same_arrays(decompress(c), packed))
              << spec << " on " << format.name << " " << dtype_name(dtype) << " seed " << seed;
          const auto f32 = decode_values_f32(c);
          const auto orig = original_values(packed);
          ASSERT_EQ(f32.size(), orig.size());
          EXPECT_EQ(std::memcmp(f32.data(), orig.data(), 4 * f32.size()), 0);
        }
}

TEST(LosslessCodecs, SpecialValuesSurviveBitExact) {
  // Infinities, NaN payloads, subnormals and signed zeros in a dense matrix.
  for (DType dtype : kValueDTypes) {
    Tensor t("w", dtype, {3, 7});
    auto bytes = t.mutable_bytes();
    std::mt19937_64 rng(5);
    for (auto& b : bytes) b = std::byte(rng() & 0xff);
    const PackedMatrix packed = pack(t, FormatKind::Dense, Pattern{});
    for (const char* spec : {"lossless", "zstd"})
      EXPECT_TRUE(same_arrays(decompress(compress(packed, CodecParams::parse(spec))), packed))
          << spec << " " << dtype_name(dtype);
  }
}

TEST(LosslessCodecs, Bf16GaussianWeightsTakeAboutElevenBits) {
  // Trained weights look Gaussian: few exponents in use, so the exponent byte costs ~2.6 bits.
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t rows = 256, cols = 512;
  std::vector<float> v(rows * cols);
  for (auto& x : v) x = normal(rng);
  const Tensor t = Tensor::from_f32("w", DType::BF16, {rows, cols}, v);
  const PackedMatrix packed = pack(t, FormatKind::Dense, Pattern{});
  const CompressedMatrix c = compress(packed, CodecParams::parse("lossless"));
  const CompressionStats st = compression_stats(c);
  EXPECT_TRUE(same_arrays(decompress(c), packed));
  // 8 raw bits + the exponent's entropy (about 2.6-2.8 bits for a Gaussian).
  EXPECT_GT(st.bits_per_value(), 10.0);
  EXPECT_LT(st.bits_per_value(), 11.5);
  EXPECT_EQ(st.metadata_bytes, 0u);
  EXPECT_EQ(st.scale_bytes, 0u);
}

// ---- group quantisation ------------------------------------------------------------------------

TEST(QuantCodecs, ErrorWithinHalfAScaleForEveryFormatDtypeAndGroup) {
  uint64_t seed = 1000;
  for (CodecKind kind : {CodecKind::Int8, CodecKind::Int4})
    for (bool symmetric : {true, false})
      for (int G : {32, 64, 128})
        for (const auto& format : all_formats())
          for (DType dtype : kValueDTypes)
            for (int trial = 0; trial < 2; ++trial) {
              CodecParams params;
              params.kind = kind;
              params.symmetric = symmetric;
              params.group_size = G;
              const PackedMatrix packed = random_packed(format.kind, dtype, ++seed);
              const CompressedMatrix c = compress(packed, params);
              const auto orig = original_values(packed);
              const auto deq = decode_values_f32(c);
              ASSERT_EQ(deq.size(), orig.size());
              const auto groups = value_groups(packed, G);
              const auto scales = c.packed.as<uint16_t>("scales");
              ASSERT_EQ(scales.size(), groups.empty() ? 0 : groups.back() + 1);
              const int qmax = symmetric ? (kind == CodecKind::Int8 ? 127 : 7)
                                         : (kind == CodecKind::Int8 ? 255 : 15);
              // Group extremes, to check the scale is as small as fp16 allows.
              std::vector<float> lo(scales.size(), INFINITY), hi(scales.size(), -INFINITY);
              for (size_t i = 0; i < orig.size(); ++i) {
                lo[groups[i]] = std::min(lo[groups[i]], orig[i]);
                hi[groups[i]] = std::max(hi[groups[i]], orig[i]);
              }
              bool ok = true;
              for (size_t i = 0; i < orig.size() && ok; ++i) {
                const float scale = f32_from_f16(scales[groups[i]]);
                const float bound = 0.5f * scale * (1 + 1e-5f) + 1e-6f * std::fabs(orig[i]);
                ok = std::fabs(deq[i] - orig[i]) <= bound;
                if (orig[i] == 0) ok = ok && deq[i] == 0;
                EXPECT_TRUE(ok) << params.to_string() << " " << format.name << " "
                                << dtype_name(dtype) << " value " << i << ": " << orig[i]
                                << " -> " << deq[i] << ", scale " << scale;
              }
              for (size_t g = 0; g < scales.size(); ++g) {
                const float range = symmetric ? std::max(std::fabs(lo[g]), std::fabs(hi[g]))
                                              : std::max(hi[g], 0.0f) - std::min(lo[g], 0.0f);
                // fp16 rounding up adds at most a relative 2^-10 plus the smallest subnormal.
                EXPECT_LE(f32_from_f16(scales[g]), range / qmax * (1 + 0x1p-10f) + 0x1p-24f)
                    << params.to_string() << " group " << g;
              }
              // Decoded back into the format: metadata untouched, values rounded to dtype.
              const PackedMatrix back = decompress(c);
              ASSERT_EQ(back.arrays.size(), packed.arrays.size());
              for (size_t a = 0; a < back.arrays.size(); ++a) {
                EXPECT_EQ(back.arrays[a].name, packed.arrays[a].name);
                if (back.arrays[a].name != "values")
                  EXPECT_EQ(back.arrays[a].bytes, packed.arrays[a].bytes);
              }
              const Tensor dense = unpack(back);
              EXPECT_EQ(dense.rows(), packed.rows);
            }
}

TEST(QuantCodecs, CodesAndScalesFollowTheDocumentedLayout) {
  // One dense row of 5 values, int4 symmetric g32: scale = 0.7 / 7 rounded up to fp16.
  const std::vector<float> v = {0.7f, -0.7f, 0.1f, -0.35f, 0.05f};
  const Tensor t = Tensor::from_f32("w", DType::F32, {1, 5}, v);
  const PackedMatrix packed = pack(t, FormatKind::Dense, Pattern{});
  const CompressedMatrix c = compress(packed, CodecParams::parse("int4:g32"));
  ASSERT_EQ(c.packed.arrays.size(), 2u);
  EXPECT_EQ(c.packed.arrays[0].name, "codes");
  EXPECT_EQ(c.packed.arrays[1].name, "scales");
  const float scale = f32_from_f16(c.packed.as<uint16_t>("scales")[0]);
  EXPECT_GE(scale, 0.1f);
  EXPECT_LT(scale, 0.1f * (1 + 0x1p-10f));
  const auto codes = c.packed.as<uint8_t>("codes");
  ASSERT_EQ(codes.size(), 3u);  // 5 nibbles
  EXPECT_EQ(codes[0] & 0xf, 8 + 7);
  EXPECT_EQ(codes[0] >> 4, 8 - 7);
  EXPECT_EQ(codes[1] & 0xf, 8 + 1);
  EXPECT_EQ(codes[1] >> 4, 8 - 3);   // -0.35 / scale = -3.4987...
  EXPECT_EQ(codes[2] & 0xf, 8 + 0);  // 0.05 / scale = 0.4998...
  EXPECT_EQ(codes[2] >> 4, 0);       // padding nibble
}

TEST(QuantCodecs, ConstantAndZeroGroupsAreExact) {
  // A group that is all zeros and one that is constant.
  std::vector<float> v(64, 0.0f);
  for (int i = 32; i < 64; ++i) v[i] = 0.375f;
  const PackedMatrix packed = pack(Tensor::from_f32("w", DType::F16, {1, 64}, v),
                                   FormatKind::Dense, Pattern{});
  for (const char* spec : {"int8:g32", "int8:g32:asym", "int4:g32", "int4:g32:asym"}) {
    const auto deq = decode_values_f32(compress(packed, CodecParams::parse(spec)));
    for (int i = 0; i < 32; ++i) EXPECT_EQ(deq[i], 0.0f) << spec;
    // max|v| = qmax * scale up to the scale's rounding up, a relative 2^-10.
    for (int i = 32; i < 64; ++i) EXPECT_NEAR(deq[i], v[i], v[i] * 0x1p-10) << spec << " " << i;
  }
}

TEST(QuantCodecs, RejectsNonFiniteAndOversizedValues) {
  std::vector<float> v = test::random_values(40, 3);
  v[17] = NAN;
  const PackedMatrix nan_packed =
      pack(Tensor::from_f32("w", DType::F32, {2, 20}, v), FormatKind::Dense, Pattern{});
  expect_error([&] { compress(nan_packed, CodecParams::parse("int8")); },
               {"packed dense matrix [2, 20]", "value 17", "nan"});
  v[17] = 3e9f;
  const PackedMatrix big =
      pack(Tensor::from_f32("w", DType::F32, {2, 20}, v), FormatKind::Dense, Pattern{});
  expect_error([&] { compress(big, CodecParams::parse("int4:g32")); },
               {"packed dense matrix [2, 20]", "group 0", "fp16"});
}

TEST(QuantCodecs, DamagedArraysAreRefusedNamingTheArray) {
  const PackedMatrix packed = random_packed(FormatKind::CSR, DType::F16, 77);
  CompressedMatrix c = compress(packed, CodecParams::parse("int4:g64:asym"));
  CompressedMatrix no_zeros = c;
  std::erase_if(no_zeros.packed.arrays, [](const PackedArray& a) { return a.name == "zeros"; });
  expect_error([&] { decompress(no_zeros); }, {"int4:g64:asym", "'zeros'", "missing"});
  CompressedMatrix short_codes = c;
  for (auto& a : short_codes.packed.arrays)
    if (a.name == "codes") a.bytes.pop_back();
  expect_error([&] { decompress(short_codes); }, {"'codes'", "bytes, expected"});
  CompressedMatrix bad_ptr = c;
  bad_ptr.packed.array("row_ptr").bytes[8] = std::byte{0xff};
  expect_error([&] { decompress(bad_ptr); }, {"packed csr matrix", "'row_ptr'"});
}

// ---- codebooks ---------------------------------------------------------------------------------

TEST(CodebookCodecs, EveryValueGetsItsNearestStoredCentroid) {
  uint64_t seed = 5000;
  for (const char* spec : {"codebook4", "codebook4:tensor", "codebook8", "codebook8:tensor",
                           "codebook4:rans", "codebook8:tensor:rans"})
    for (const auto& format : all_formats())
      for (DType dtype : kValueDTypes) {
        const CodecParams params = CodecParams::parse(spec);
        const int k = params.kind == CodecKind::Codebook4 ? 16 : 256;
        const PackedMatrix packed = random_packed(format.kind, dtype, ++seed);
        const CompressedMatrix c = compress(packed, params);
        const auto orig = original_values(packed);
        const auto deq = decode_values_f32(c);
        const auto book = c.packed.as<uint16_t>("codebook");
        const auto lengths = segment_lengths(packed);
        ASSERT_EQ(book.size(), (params.per_channel ? lengths.size() : 1) * k) << spec;
        size_t i = 0;
        for (size_t s = 0; s < lengths.size(); ++s) {
          const size_t b = params.per_channel ? s : 0;
          std::vector<float> entries(k);
          for (int j = 0; j < k; ++j) entries[j] = f32_from_f16(book[b * k + j]);
          EXPECT_TRUE(std::is_sorted(entries.begin(), entries.end()));
          for (int64_t j = 0; j < lengths[s]; ++j, ++i) {
            float best = INFINITY;
            for (float e : entries) best = std::min(best, std::fabs(orig[i] - e));
            EXPECT_EQ(std::fabs(orig[i] - deq[i]), best) << spec << " value " << i;
            if (orig[i] == 0) EXPECT_EQ(deq[i], 0.0f) << spec << " value " << i;
          }
        }
        // Bit-exact decode is deterministic: compressing twice gives the same bytes.
        EXPECT_TRUE(same_arrays(compress(packed, params).packed, c.packed));
        // Zeros stayed zero, so the decoded matrix is still a valid packed matrix.
        EXPECT_EQ(unpack(decompress(c)).rows(), packed.rows);
      }
}

TEST(CodebookCodecs, PerChannelCodebookWithFewValuesIsExact) {
  // Rows of at most 16 distinct values: a 16-entry codebook per row represents them exactly
  // (up to fp16 rounding of the centroids, which are the values themselves here).
  const int64_t rows = 8, cols = 48;
  std::vector<float> v(rows * cols);
  std::mt19937_64 rng(9);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = f32_from_f16(f16_from_f32(
        (static_cast<int>(rng() % 16) - 7.5f) * 0.125f * (r + 1)));
  const PackedMatrix packed =
      pack(Tensor::from_f32("w", DType::F16, {rows, cols}, v), FormatKind::Dense, Pattern{});
  const auto deq = decode_values_f32(compress(packed, CodecParams::parse("codebook4")));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(deq[i], v[i]) << i;
}

TEST(KMeans, RecoversPlantedClusters) {
  for (int k : {16, 256}) {
    std::mt19937_64 rng(k);
    // Centres 1 apart (shuffled), points within +-0.01 of them, uneven cluster sizes.
    std::vector<float> centres(k);
    for (int j = 0; j < k; ++j) centres[j] = -0.5f * k + j + 0.25f;
    std::vector<float> data;
    std::uniform_real_distribution<float> noise(-0.01f, 0.01f);
    for (int j = 0; j < k; ++j)
      for (int i = 0, size = 5 + rng() % 40; i < size; ++i) data.push_back(centres[j] + noise(rng));
    std::shuffle(data.begin(), data.end(), rng);
    for (uint64_t seed : {0ull, 1ull, 12345ull}) {
      const auto found = codec::kmeans_1d(data, {}, k, 100, seed);
      ASSERT_EQ(found.size(), size_t(k));
      for (int j = 0; j < k; ++j)
        EXPECT_NEAR(found[j], centres[j], 0.01) << "k " << k << " seed " << seed << " centre " << j;
      EXPECT_EQ(found, codec::kmeans_1d(data, {}, k, 100, seed)) << "not deterministic";
    }
  }
}

TEST(KMeans, ImportanceWeightsPullCentroids) {
  // Two values, one centroid: the weighted mean.
  const std::vector<float> data = {0.0f, 1.0f, 1.0f};
  const std::vector<float> weights = {3.0f, 0.5f, 0.5f};
  EXPECT_NEAR(codec::kmeans_1d(data, weights, 1, 10, 0)[0], 0.25f, 1e-6);
  EXPECT_NEAR(codec::kmeans_1d(data, {}, 1, 10, 0)[0], 2.0f / 3, 1e-6);
  // Through the codec: weighting a few values heavily lowers their error.
  const PackedMatrix packed =
      pack(test::random_tensor("w", DType::F32, {4, 256}, 21), FormatKind::Dense, Pattern{});
  const auto orig = original_values(packed);
  std::vector<float> importance(orig.size(), 0.01f);
  for (size_t i = 0; i < importance.size(); i += 7) importance[i] = 100.0f;
  auto weighted_error = [&](const std::vector<float>& deq) {
    double e = 0;
    for (size_t i = 0; i < orig.size(); ++i) e += importance[i] * std::pow(deq[i] - orig[i], 2);
    return e;
  };
  const auto plain = decode_values_f32(compress(packed, CodecParams::parse("codebook4")));
  const auto weighted = decode_values_f32(
      compress(packed, CodecParams::parse("codebook4"), EncodeOptions{importance}));
  EXPECT_LT(weighted_error(weighted), 0.5 * weighted_error(plain));
}

TEST(KMeans, FewerDistinctValuesThanCentroids) {
  const std::vector<float> data = {2.0f, -1.0f, 2.0f, 0.5f};
  const auto c = codec::kmeans_1d(data, {}, 16, 10, 3);
  ASSERT_EQ(c.size(), 16u);
  EXPECT_TRUE(std::is_sorted(c.begin(), c.end()));
  for (float v : data) EXPECT_EQ(c[codec::nearest_centroid(c, v)], v);
}

TEST(CodebookCodecs, RejectsBadImportance) {
  const PackedMatrix packed = random_packed(FormatKind::Bitmap, DType::F32, 31);
  const int64_t n = original_values(packed).size();
  std::vector<float> short_weights(n - 1, 1.0f), negative(n, 1.0f);
  negative[2] = -1.0f;
  expect_error([&] { compress(packed, CodecParams::parse("codebook4"), {short_weights}); },
               {"packed bitmap matrix", "importance", "expected one per value"});
  expect_error([&] { compress(packed, CodecParams::parse("codebook4"), {negative}); },
               {"importance weight 2", "non-negative"});
}

// ---- rANS --------------------------------------------------------------------------------------

TEST(Rans, RoundTripsManyDistributionsAndLengths) {
  std::mt19937_64 rng(42);
  for (int alphabet : {1, 2, 16, 32, 256})
    for (int64_t n : {0, 1, 3, 4, 5, 1000, 65535, 65536, 65537, 200001}) {
      std::vector<uint8_t> s(n);
      // Geometric-ish: symbol j with probability ~ 2^-j, plus a few uniform ones.
      for (auto& x : s) {
        int j = 0;
        while (j + 1 < alphabet && (rng() & 1)) ++j;
        x = static_cast<uint8_t>((rng() % 10 == 0) ? rng() % alphabet : j);
      }
      const auto stream = codec::rans_encode(s, alphabet);
      EXPECT_EQ(codec::rans_decode(stream, n, alphabet, "test"), s)
          << "alphabet " << alphabet << " n " << n;
    }
}

TEST(Rans, SizeIsCloseToTheEntropy) {
  std::mt19937_64 rng(7);
  const int64_t n = 1 << 20;
  std::vector<uint8_t> s(n);
  std::vector<double> count(256, 0);
  std::normal_distribution<double> normal(128, 6);
  for (auto& x : s) {
    x = static_cast<uint8_t>(std::clamp(std::lround(normal(rng)), 0l, 255l));
    ++count[x];
  }
  double entropy = 0;
  for (double c : count)
    if (c) entropy -= c / n * std::log2(c / n);
  // Version 1: 4 states per 65536 symbols. Version 2 (GPU): 12 probability bits, 128 bytes of
  // states per 4096 symbols (0.25 bits) and 16-bit words.
  for (const auto& [version, overhead] : {std::pair{1, 0.01}, std::pair{2, 0.3}}) {
    SCOPED_TRACE(version);
    const double bits = 8.0 * codec::rans_encode(s, 256, version).size() / n;
    EXPECT_GT(bits, entropy);
    EXPECT_LT(bits, entropy * 1.01 + overhead);
  }
}

TEST(Rans, DamagedStreamsAreRefused) {
  std::mt19937_64 rng(3);
  std::vector<uint8_t> s(150000);
  for (auto& x : s) x = static_cast<uint8_t>(rng() % 7 + (rng() % 3 == 0 ? rng() % 100 : 0));
  const auto stream = codec::rans_encode(s, 256);
  auto truncated = stream;
  truncated.resize(stream.size() - 5);
  expect_error([&] { codec::rans_decode(truncated, s.size(), 256, "array 'x'"); },
               {"array 'x'", "chunks end at byte"});
  expect_error([&] { codec::rans_decode(std::span(stream).first(10), s.size(), 256, "x"); },
               {"shorter than its 16-byte header"});
  expect_error([&] { codec::rans_decode(stream, s.size() + 1, 256, "x"); },
               {"holds 150000 symbols, expected 150001"});
  expect_error([&] { codec::rans_decode(stream, s.size(), 16, "x"); }, {"alphabet of 256"});
  auto bad_freq = stream;
  bad_freq[16] = std::byte(std::to_integer<uint8_t>(bad_freq[16]) ^ 1);
  expect_error([&] { codec::rans_decode(bad_freq, s.size(), 256, "x"); }, {"frequencies sum"});
  // Flipped bytes inside the chunk data: caught by the final-state check.
  for (size_t pos : {stream.size() - 1, stream.size() - 1000, stream.size() / 2 + 3,
                     size_t(16 + 512 + 12 + 40)}) {
    auto flipped = stream;
    flipped[pos] = std::byte(std::to_integer<uint8_t>(flipped[pos]) ^ 0x10);
    expect_error([&] { codec::rans_decode(flipped, s.size(), 256, "array 'y'"); },
                 {"array 'y'", "rANS chunk", "corrupted"});
  }
}

TEST(Rans, RejectsSymbolsOutsideTheAlphabet) {
  const std::vector<uint8_t> s = {1, 2, 16};
  expect_error([&] { codec::rans_encode(s, 16); }, {"symbol 16", "alphabet of 16"});
}

// ---- statistics --------------------------------------------------------------------------------

TEST(CompressionStats, RolesAddUpToEveryByte) {
  uint64_t seed = 9000;
  for (const auto& codec : all_codecs())
    for (const auto& format : all_formats()) {
      const PackedMatrix packed = random_packed(format.kind, DType::BF16, ++seed);
      CodecParams params;
      params.kind = codec.kind;
      const CompressedMatrix c = compress(packed, params);
      const CompressionStats st = compression_stats(c);
      EXPECT_EQ(st.value_bytes + st.metadata_bytes + st.scale_bytes, c.packed.total_bytes());
      const CompressionStats raw = compression_stats(packed);
      EXPECT_EQ(st.metadata_bytes, raw.metadata_bytes) << codec.name << " " << format.name;
      EXPECT_EQ(raw.value_bytes, static_cast<uint64_t>(raw.values) * 2);
      EXPECT_EQ(st.values, raw.values);
      EXPECT_NEAR(st.total_bits(), 8.0 * c.packed.total_bytes() / (packed.rows * packed.cols),
                  1e-9);
    }
}

TEST(CompressionStats, Int4G128TwoFourIsAboutHalfAByteAtHalfDensity) {
  const Pattern p = test::nm_pattern(2, 4);
  const PackedMatrix packed = pack(
      test::random_sparse_tensor("w", DType::F16, {128, 1024}, p, 4), FormatKind::NM, p);
  const CompressionStats st = compression_stats(compress(packed, CodecParams::parse("int4")));
  EXPECT_DOUBLE_EQ(st.value_bits(), 2.0);         // 4 bits x 1/2 density
  EXPECT_DOUBLE_EQ(st.metadata_bits(), 1.0);      // 2:4 metadata: 4 bits per 4 columns
  EXPECT_DOUBLE_EQ(st.scale_bits(), 16.0 / 256);  // one fp16 per 128 values = 256 columns
}

}  // namespace
}  // namespace sparsa
