// Shared by the compressed-decode GPU tests (gpu_compressed_gemm_test.cc,
// gpu_bitmap_codec_test.cc): random compressed matrices, their dequantised weights, the double
// reference product, and one checked run of cuda::compressed_decode.
#pragma once

#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/compressed_internal.h"
#include "gpu_sparse_util.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_compressed.h"
#include "sparsa/format.h"
#include "sparse_matrices.h"

namespace sparsa::test {

struct CompressedShape {
  int64_t n, k;
};

// A random [n, k] fp16 matrix pruned to `pattern`, packed in `format` and compressed by `spec`
// (k-means capped at `max_iterations` to keep the tests short).
inline CompressedMatrix random_compressed(const Pattern& pattern, FormatKind format,
                                          const char* spec, int64_t n, int64_t k, uint64_t seed,
                                          int max_iterations) {
  const Tensor dense = random_sparse_tensor("w", DType::F16, {n, k}, pattern, seed);
  CodecParams params = CodecParams::parse(spec);
  params.iterations = std::min(params.iterations, max_iterations);
  return compress(pack(dense, format, pattern), params);
}

// The tiling's host decode (cuda::compressed_tiled_row) gives `want` [s.n, s.k] bit for bit, and
// the matrix holds some nonzero value (no test on all-zero weights).
inline void expect_tiling_decodes_to(const cuda::CompressedTiled& tiled,
                                     const std::vector<float>& want, CompressedShape s) {
  double nonzero = 0;
  for (int64_t r = 0; r < s.n; ++r) {
    const std::vector<float> row = cuda::compressed_tiled_row(tiled, r);
    for (int64_t k = 0; k < s.k; ++k) {
      ASSERT_EQ(row[k], want[r * s.k + k]) << "row " << r << " col " << k;
      nonzero += row[k] != 0;
    }
  }
  EXPECT_GT(nonzero, 0);
}

// The dequantised dense weights (fp16-rounded values) as floats [n, k].
inline std::vector<float> dequantised(const CompressedMatrix& c) {
  return unpack(decompress(c)).to_f32();
}

// Y[m, n] = X * W^T in double, W dense [n, x.cols].
inline std::vector<float> reference_dense(const Activations& x, const std::vector<float>& w,
                                          int64_t n) {
  std::vector<float> y(x.m * n);
  for (int64_t t = 0; t < x.m; ++t)
    for (int64_t r = 0; r < n; ++r) {
      double sum = 0;
      for (int64_t k = 0; k < x.cols; ++k)
        sum += double(x.values[t * x.cols + k]) * w[r * x.cols + k];
      y[t * n + r] = static_cast<float>(sum);
    }
  return y;
}

// How many outputs of a and b differ in their bits (kernels that must multiply the same fp16
// weights in the same order).
inline int64_t differing_outputs(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t differ = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return differ + static_cast<int64_t>(a.size() > b.size() ? a.size() - b.size() : b.size() - a.size());
}

// Relative Frobenius error of `samples` random outputs of y [x.m, n] against the double product
// of X and the dense weights [n, k].
inline double sampled_product_error(const Activations& x, const std::vector<float>& dense, int64_t n,
                                    int64_t k, const std::vector<float>& y, uint64_t seed,
                                    int samples = 2000) {
  std::mt19937_64 rng(seed);
  double err2 = 0, ref2 = 0;
  for (int t = 0; t < samples; ++t) {
    const int64_t i = static_cast<int64_t>(rng() % x.m), j = static_cast<int64_t>(rng() % n);
    double ref = 0;
    for (int64_t q = 0; q < k; ++q) ref += static_cast<double>(x.values[i * k + q]) * dense[j * k + q];
    const double d = y[i * n + j] - ref;
    err2 += d * d;
    ref2 += ref * ref;
  }
  return std::sqrt(err2 / ref2);
}

// Uploads `tiled`, runs compressed_decode twice on random X [m, s.k] (NaN-poisoned y and
// padding, `ctas` forced when > 0) and expects nothing written past column N, the same bytes
// both times, and y within `tolerance` (relative Frobenius) of X * dense^T.
inline void expect_decode_matches(const cuda::CompressedTiled& tiled,
                                  const std::vector<float>& dense, CompressedShape s, int64_t m,
                                  cuda::ElemType y_type, int ctas, uint64_t seed,
                                  double tolerance) {
  const auto dev = cuda::upload(tiled);
  const Activations x = random_activations(m, s.k, cuda::ElemType::F16, seed + 1);
  const size_t ws = cuda::compressed_workspace_bytes(dev.weights, m, ctas);
  const DeviceRun run = run_on_device(x, s.n, y_type, ws, ctas, [&](const auto& p) {
    return cuda::compressed_decode(dev.weights, p, nullptr);
  });
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs";
  const double err = relative_error(run.y, reference_dense(x, dense, s.n));
  EXPECT_LE(err, tolerance);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
}

// Runs compressed_decode twice on `x` with `ctas` forced when > 0 and expects nothing written past
// column N, the same bytes both times and y within `tolerance` (relative Frobenius) of `ref`.
// Returns y, for the callers' bit-for-bit comparisons between kernel variants.
template <typename DeviceWeights>
std::vector<float> checked_decode(const DeviceWeights& weights, const Activations& x, int64_t n,
                                  cuda::ElemType y_type, int ctas, const std::vector<float>& ref,
                                  double tolerance) {
  const size_t ws = cuda::compressed_workspace_bytes(weights, x.m, ctas);
  const DeviceRun run = run_on_device(x, n, y_type, ws, ctas, [&](const auto& p) {
    return cuda::compressed_decode(weights, p, nullptr);
  });
  EXPECT_TRUE(run.padding_intact) << "wrote past column N of y";
  EXPECT_TRUE(run.repeatable) << "second call differs";
  const double err = relative_error(run.y, ref);
  EXPECT_LE(err, tolerance);
  EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
  return run.y;
}

// checked_decode under the process-wide loop variant `variant` (SPARSA_COMPRESSED_VARIANT's).
template <typename DeviceWeights>
std::vector<float> decode_under_variant(const DeviceWeights& weights, const Activations& x,
                                        int64_t n, cuda::ElemType y_type, int ctas, int variant,
                                        const std::vector<float>& ref, double tolerance) {
  cuda::detail::set_compressed_variant(variant);
  EXPECT_EQ(cuda::detail::compressed_variant(), variant) << "variant " << variant << " unknown";
  return checked_decode(weights, x, n, y_type, ctas, ref, tolerance);
}

}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
