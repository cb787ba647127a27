// The GPU-friendly rANS stream (version 2: 32 states per chunk, 4096-symbol chunks, 16-bit
// renormalisation) on the CPU: round trips over distributions and ragged lengths, size near the
// entropy, damaged streams refused, version 1 still read, and `lossless:gpu` bit-exact on
// bf16/f16/f32 values with every bit pattern (NaN, inf, subnormal, -0).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "codec/codec_internal.h"
#include "sparsa/codec.h"
#include "sparsa/error.h"
#include "test_util.h"

namespace sparsa::test {
namespace {

std::vector<uint8_t> geometric_symbols(int64_t n, int alphabet, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> s(n);
  for (auto& x : s) {
    int j = 0;
    while (j + 1 < alphabet && (rng() & 1)) ++j;
    x = static_cast<uint8_t>((rng() % 10 == 0) ? rng() % alphabet : j);
  }
  return s;
}

TEST(RansGpuStream, RoundTripsManyDistributionsAndLengths) {
  uint64_t seed = 1;
  for (int alphabet : {1, 2, 32, 256})
    for (int64_t n : {0, 1, 31, 32, 33, 4095, 4096, 4097, 8192 + 17, 100003}) {
      const auto s = geometric_symbols(n, alphabet, ++seed);
      const auto stream = codec::rans_encode(s, alphabet, 2);
      EXPECT_EQ(codec::rans_stream_version(stream), 2);
      EXPECT_EQ(codec::rans_decode(stream, n, alphabet, "test"), s)
          << "alphabet " << alphabet << " n " << n;
    }
  // One symbol carrying all the probability (a constant run) and a uniform byte stream.
  const std::vector<uint8_t> run(5000, 7);
  EXPECT_EQ(codec::rans_decode(codec::rans_encode(run, 256, 2), 5000, 256, "t"), run);
  std::mt19937_64 rng(9);
  std::vector<uint8_t> uniform(50000);
  for (auto& x : uniform) x = static_cast<uint8_t>(rng());
  EXPECT_EQ(codec::rans_decode(codec::rans_encode(uniform, 256, 2), 50000, 256, "t"), uniform);
}

// Size against the entropy: Rans.SizeIsCloseToTheEntropy (codec_test.cc) covers both versions.

TEST(RansGpuStream, DamagedStreamsAreRefused) {
  std::mt19937_64 rng(3);
  std::vector<uint8_t> s(20000);
  for (auto& x : s) x = static_cast<uint8_t>(rng() % 7 + (rng() % 3 == 0 ? rng() % 100 : 0));
  const auto stream = codec::rans_encode(s, 256, 2);
  auto truncated = stream;
  truncated.resize(stream.size() - 2);
  expect_error([&] { codec::rans_decode(truncated, s.size(), 256, "array 'x'"); },
               {"array 'x'", "chunks end at byte"});
  expect_error([&] { codec::rans_decode(stream, s.size() + 1, 256, "x"); },
               {"holds 20000 symbols, expected 20001"});
  auto bad_freq = stream;
  bad_freq[16] = std::byte(std::to_integer<uint8_t>(bad_freq[16]) ^ 1);
  expect_error([&] { codec::rans_decode(bad_freq, s.size(), 256, "x"); }, {"frequencies sum"});
  auto bad_bits = stream;
  bad_bits[1] = std::byte{14};
  expect_error([&] { codec::rans_decode(bad_bits, s.size(), 256, "x"); },
               {"14 probability bits, expected 12"});
  auto bad_version = stream;
  bad_version[0] = std::byte{3};
  expect_error([&] { codec::rans_decode(bad_version, s.size(), 256, "x"); },
               {"version 3 is not supported"});
  // Flipped bytes in the states and in the words: caught by the final-state/all-used checks.
  const size_t data = 16 + 512 + 4 * 5;
  for (size_t pos : {stream.size() - 1, stream.size() - 300, stream.size() / 2 + 3, data + 5,
                     data + 4 * 31 + 1, data + 200}) {
    auto flipped = stream;
    flipped[pos] = std::byte(std::to_integer<uint8_t>(flipped[pos]) ^ 0x10);
    expect_error([&] { codec::rans_decode(flipped, s.size(), 256, "array 'y'"); },
                 {"array 'y'", "rANS chunk", "corrupted"});
  }
  // The GPU tables come from the same checked header.
  expect_error([&] { codec::rans_gpu_tables(truncated, s.size(), 256, "array 'z'"); },
               {"array 'z'", "chunks end at byte"});
  expect_error(
      [&] { codec::rans_gpu_tables(codec::rans_encode(s, 256, 1), s.size(), 256, "array 'v'"); },
      {"array 'v'", "version 1 has no GPU decoder"});
}

TEST(RansGpuStream, GpuTablesDescribeTheStream) {
  const auto s = geometric_symbols(3 * 4096 + 100, 32, 77);
  const auto stream = codec::rans_encode(s, 32, 2);
  const auto t = codec::rans_gpu_tables(stream, s.size(), 32, "t");
  EXPECT_EQ(t.count, static_cast<int64_t>(s.size()));
  EXPECT_EQ(t.chunk_symbols, 4096);
  ASSERT_EQ(t.table.size(), 4096u);
  ASSERT_EQ(t.chunk_word.size(), 5u);
  EXPECT_EQ(t.data_offset, 16u + 64 + 4 * 4);
  EXPECT_EQ(t.data_offset + 2 * t.chunk_word.back(), stream.size());
  for (size_t c = 0; c + 1 < t.chunk_word.size(); ++c)
    EXPECT_GE(t.chunk_word[c + 1] - t.chunk_word[c], 64u);  // 32 u32 states at least
  // Every slot's entry names a symbol whose range holds the slot.
  for (uint32_t slot = 0; slot < 4096; ++slot) {
    const uint32_t e = t.table[slot], freq = ((e >> 8) & 0xfff) + 1, bias = e >> 20;
    EXPECT_LT(e & 0xff, 32u);
    EXPECT_LT(bias, freq);
    EXPECT_EQ(t.table[slot - bias], (e & 0xfffff));  // the symbol's first slot has bias 0
  }
}

TEST(RansGpuStream, LosslessGpuSpecRoundTrips) {
  const CodecParams p = CodecParams::parse("lossless:gpu");
  EXPECT_TRUE(p.gpu_stream);
  EXPECT_EQ(p.to_string(), "lossless:gpu");
  EXPECT_EQ(CodecParams::parse("lossless").to_string(), "lossless");
  expect_error([] { CodecParams::parse("lossless:cpu"); }, {"'lossless:cpu'", "'cpu'", "gpu"});
  expect_error([] { CodecParams::parse("int8:gpu"); }, {"'int8:gpu'", "'gpu'"});
}

TEST(RansGpuStream, LosslessGpuIsBitExactOnEveryBitPattern) {
  uint64_t seed = 500;
  for (DType dtype : {DType::BF16, DType::F16, DType::F32})
    for (auto [rows, cols] :
         {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {17, 33}, {64, 4096}, {5, 4097}, {129, 100}}) {
      Tensor t("w", dtype, {rows, cols});
      auto bytes = t.mutable_bytes();
      std::mt19937_64 rng(++seed);
      // Random bits: NaN payloads, infinities, subnormals and signed zeros all occur.
      for (auto& b : bytes) b = std::byte(rng() & 0xff);
      const PackedMatrix packed = pack(t, FormatKind::Dense, Pattern{});
      const CompressedMatrix c = compress(packed, CodecParams::parse("lossless:gpu"));
      EXPECT_EQ(codec::rans_stream_version(c.packed.array("exponents").bytes), 2);
      const PackedMatrix back = decompress(c);
      ASSERT_EQ(back.array("values").bytes.size(), packed.array("values").bytes.size());
      EXPECT_EQ(std::memcmp(back.array("values").bytes.data(), packed.array("values").bytes.data(),
                            packed.array("values").bytes.size()),
                0)
          << dtype_name(dtype) << " " << rows << "x" << cols;
    }
}

TEST(RansGpuStream, Bf16GaussianWeightsStayNearElevenBits) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t rows = 64, cols = 4096;
  std::vector<float> v(rows * cols);
  for (auto& x : v) x = normal(rng);
  const PackedMatrix packed =
      pack(Tensor::from_f32("w", DType::BF16, {rows, cols}, v), FormatKind::Dense, Pattern{});
  const CompressionStats cpu = compression_stats(compress(packed, CodecParams::parse("lossless")));
  const CompressedMatrix c = compress(packed, CodecParams::parse("lossless:gpu"));
  const CompressionStats gpu = compression_stats(c);
  EXPECT_EQ(decompress(c).array("values").bytes, packed.array("values").bytes);
  EXPECT_GT(gpu.bits_per_value(), cpu.bits_per_value());
  EXPECT_LT(gpu.bits_per_value(), cpu.bits_per_value() + 0.35);
  EXPECT_LT(gpu.bits_per_value(), 11.5);
}

}  // namespace
}  // namespace sparsa::test
