// The CUDA lossless decoder (src/cuda/rans_decode.cu) against the CPU decoder, its reference
// twin: random bit patterns (NaN, inf, subnormals, -0) of bf16 and f16 over many ragged sizes
// decode bit for bit; the on-the-fly GEMV matches a double-precision product of the CPU-decoded
// weights (rows inside one chunk and rows spanning chunks); damaged chunk data is reported by
// the device; bad inputs to the upload are refused with a message naming the matrix.
#ifdef SPARSA_WITH_CUDA

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "gpu_sparse_util.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_rans.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/half.h"
#include "test_util.h"

namespace sparsa::test {
namespace {

CompressedMatrix random_bits(DType dtype, int64_t rows, int64_t cols, uint64_t seed) {
  Tensor t("w", dtype, {rows, cols});
  std::mt19937_64 rng(seed);
  for (auto& b : t.mutable_bytes()) b = std::byte(rng() & 0xff);
  return compress(pack(t, FormatKind::Dense, Pattern{}), CodecParams::parse("lossless:gpu"));
}

CompressedMatrix gaussian(DType dtype, int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> v(rows * cols);
  for (auto& x : v) x = normal(rng);
  return compress(pack(Tensor::from_f32("w", dtype, {rows, cols}, v), FormatKind::Dense, Pattern{}),
                  CodecParams::parse("lossless:gpu"));
}

// Device decode of `c`; returns the bits and the error flag.
std::vector<uint16_t> gpu_decode(const cuda::DeviceLossless& d, int* error) {
  const int64_t n = d.weights.count;
  cuda::DeviceBuffer out(2 * std::max<int64_t>(n, 1)), err(sizeof(int));
  cuda::check_cuda(cudaMemset(out.data(), 0xff, out.bytes()), "memset");
  cuda::check_cuda(cudaMemset(err.data(), 0, sizeof(int)), "memset");
  cuda::check_cuda(cuda::lossless_decode(d.weights, static_cast<uint16_t*>(out.data()),
                                         static_cast<int*>(err.data()), nullptr),
                   "lossless_decode");
  cuda::check_cuda(cudaDeviceSynchronize(), "sync");
  std::vector<uint16_t> bits(n);
  if (n) out.download(bits.data(), 2 * n);
  err.download(error, sizeof(int));
  return bits;
}

TEST(GpuRans, DecodeIsBitExactAgainstTheCpuDecoder) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 10;
  for (DType dtype : {DType::BF16, DType::F16})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1},
                              {1, 31},
                              {1, 32},
                              {1, 33},
                              {3, 7},
                              {1, 4095},
                              {1, 4096},
                              {1, 4097},
                              {17, 1000},
                              {3, 4096 * 3 + 5},
                              {250, 1001},
                              {64, 4096}}) {
      for (bool realistic : {false, true}) {
        const CompressedMatrix c = realistic ? gaussian(dtype, rows, cols, ++seed)
                                             : random_bits(dtype, rows, cols, ++seed);
        const PackedArray cpu = decompress(c).array("values");
        const cuda::DeviceLossless d = cuda::upload_lossless(c);
        int error = -1;
        const std::vector<uint16_t> gpu = gpu_decode(d, &error);
        EXPECT_EQ(error, 0);
        ASSERT_EQ(cpu.bytes.size(), 2 * gpu.size());
        EXPECT_EQ(std::memcmp(cpu.bytes.data(), gpu.data(), cpu.bytes.size()), 0)
            << dtype_name(dtype) << " " << rows << "x" << cols
            << (realistic ? " gaussian" : " bits");
      }
    }
}

TEST(GpuRans, GemvMatchesTheDecodedProduct) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 300;
  // 64x4096 and 3x1024: whole rows per chunk (direct stores); 37x96 and 5x8192: rows across
  // chunk ends (atomics).
  for (DType dtype : {DType::BF16, DType::F16})
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 4096},
                              {3, 1024},
                              {37, 96},
                              {5, 8192},
                              {130, 4096 + 64}}) {
      const CompressedMatrix c = gaussian(dtype, rows, cols, ++seed);
      const std::vector<float> w = decode_values_f32(c);
      const auto xf = random_values(cols, ++seed);
      const auto type = dtype == DType::BF16 ? cuda::ElemType::BF16 : cuda::ElemType::F16;
      std::vector<uint16_t> xb(cols);
      for (int64_t k = 0; k < cols; ++k) xb[k] = to_bits(xf[k], type);
      const cuda::DeviceLossless d = cuda::upload_lossless(c);
      cuda::DeviceBuffer x(2 * cols), y(4 * rows), err(sizeof(int));
      x.upload(xb.data(), 2 * cols);
      cuda::check_cuda(cudaMemset(y.data(), 0xff, 4 * rows), "memset");  // NaN poison
      cuda::check_cuda(cudaMemset(err.data(), 0, sizeof(int)), "memset");
      cuda::check_cuda(cuda::lossless_gemv(d.weights, static_cast<const uint16_t*>(x.data()),
                                           static_cast<float*>(y.data()),
                                           static_cast<int*>(err.data()), nullptr),
                       "lossless_gemv");
      cuda::check_cuda(cudaDeviceSynchronize(), "sync");
      std::vector<float> got(rows);
      int error = -1;
      y.download(got.data(), 4 * rows);
      err.download(&error, sizeof(int));
      EXPECT_EQ(error, 0);
      for (int64_t r = 0; r < rows; ++r) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < cols; ++k) {
          const double p = double(w[r * cols + k]) * from_bits(xb[k], type);
          ref += p;
          mag += std::abs(p);
        }
        ASSERT_NEAR(got[r], ref, 1e-5 * mag + 1e-7)
            << dtype_name(dtype) << " " << rows << "x" << cols << " row " << r;
      }
    }
}

TEST(GpuRans, DamagedChunkDataIsReported) {
  SPARSA_SKIP_WITHOUT_GPU();
  CompressedMatrix c = gaussian(DType::BF16, 8, 4096, 77);
  auto& stream = c.packed.arrays[0].name == "exponents" ? c.packed.arrays[0] : c.packed.arrays[1];
  ASSERT_EQ(stream.name, "exponents");
  // Chunk 5's first renormalisation word (after the header, 256 freqs, 8 chunk sizes, 5 chunks).
  const size_t data = 16 + 512 + 4 * 8;
  size_t chunk5 = data;
  for (int k = 0; k < 5; ++k) {
    uint32_t words = 0;
    std::memcpy(&words, stream.bytes.data() + 16 + 512 + 4 * k, 4);
    chunk5 += 2 * words;
  }
  stream.bytes[chunk5 + 128 + 1] ^= std::byte{0x20};
  expect_error([&] { decompress(c); }, {"rANS chunk 5", "corrupted"});
  const cuda::DeviceLossless d = cuda::upload_lossless(c);  // header and tables still check
  int error = 0;
  gpu_decode(d, &error);
  EXPECT_EQ(error, 6);  // 1 + the bad chunk
}

TEST(GpuRans, BadInputsAreRefused) {
  SPARSA_SKIP_WITHOUT_GPU();
  Tensor t = random_tensor("w", DType::BF16, {4, 64}, 5);
  const PackedMatrix packed = pack(t, FormatKind::Dense, Pattern{});
  expect_error([&] { cuda::upload_lossless(compress(packed, CodecParams::parse("lossless"))); },
               {"[4, 64]", "array 'exponents'", "version 1 has no GPU decoder"});
  expect_error([&] { cuda::upload_lossless(compress(packed, CodecParams::parse("int8"))); },
               {"[4, 64]", "lossless codec only"});
  const PackedMatrix f32 =
      pack(random_tensor("w", DType::F32, {4, 64}, 6), FormatKind::Dense, Pattern{});
  expect_error([&] { cuda::upload_lossless(compress(f32, CodecParams::parse("lossless:gpu"))); },
               {"[4, 64]", "BF16 or F16 values, not F32"});
  // The GEMV needs cols % 32 == 0.
  const cuda::DeviceLossless d = cuda::upload_lossless(random_bits(DType::BF16, 4, 33, 8));
  EXPECT_EQ(cuda::lossless_gemv(d.weights, nullptr, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
