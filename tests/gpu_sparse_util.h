// Helpers for the GPU sparse-GEMM tests: random 2:4 and V:2:M weights in the canonical packed
// layout of sparsa/format.h (built here from the documented layout), random activations, a
// double-precision CPU reference of the same masked weights, and device round trips.
#pragma once
#ifdef SPARSA_WITH_CUDA

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "cuda/decode_tuning.h"
#include "sparsa/cuda_kernels.h"
#include "sparsa/half.h"
#include "test_util.h"

namespace sparsa::test {

// Puts the decode tuning back as it was when a test that switches it ends (pass or fail).
struct TuningRestore {
  cuda::DecodeTuning was = cuda::decode_tuning();
  ~TuningRestore() { cuda::set_decode_tuning(was); }
};

inline bool have_gpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define SPARSA_SKIP_WITHOUT_GPU() \
  if (!::sparsa::test::have_gpu()) GTEST_SKIP() << "no CUDA device"

// Compute capability 9.0 (H100/H200), where the wgmma.sp kernels run.
inline bool is_sm90() {
  int device = 0, major = 0, minor = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
         cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess &&
         major == 9 && minor == 0;
}

inline const char* type_name(cuda::ElemType t) {
  return t == cuda::ElemType::F32 ? "f32" : t == cuda::ElemType::F16 ? "f16" : "bf16";
}

inline uint16_t to_bits(float v, cuda::ElemType type) {
  return type == cuda::ElemType::BF16 ? bf16_from_f32(v) : f16_from_f32(v);
}
inline float from_bits(uint16_t b, cuda::ElemType type) {
  return type == cuda::ElemType::BF16 ? f32_from_bf16(b) : f32_from_f16(b);
}

// A pruned weight matrix: the dense masked values (exactly representable in `type`) and its
// canonical packed arrays.
struct SparseWeights {
  int64_t rows = 0, cols = 0;
  std::vector<float> dense;      // [rows, cols], pruned entries 0
  std::vector<uint16_t> values;  // canonical values (bits)
  std::vector<uint32_t> meta;    // nm: indices; vnm: metadata
  std::vector<uint8_t> columns;  // vnm only
};

// Two distinct positions of a 2:4 group, ascending, drawn from `rng`.
inline std::pair<int, int> two_of_four(std::mt19937_64& rng) {
  int i0, i1;
  do {
    i0 = static_cast<int>(rng() % 4);
    i1 = static_cast<int>(rng() % 4);
  } while (i0 == i1);
  return {std::min(i0, i1), std::max(i0, i1)};
}

// 2:4 along K; groups at the ragged edge keep columns inside the matrix where they can.
inline SparseWeights random_nm24(int64_t rows, int64_t cols, cuda::ElemType type, uint64_t seed) {
  SparseWeights w;
  w.rows = rows;
  w.cols = cols;
  const int64_t groups = (cols + 3) / 4, words = (groups + 7) / 8;
  w.dense.assign(rows * cols, 0.0f);
  w.values.assign(rows * groups * 2, 0);
  w.meta.assign(rows * words, 0);
  const auto vals = random_values(rows * groups * 2, seed);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const auto [i0, i1] = two_of_four(rng);
      const int idx[2] = {i0, i1};
      for (int j = 0; j < 2; ++j) {
        const int64_t c = g * 4 + idx[j];
        uint16_t bits = 0;
        if (c < cols) {
          bits = to_bits(vals[(r * groups + g) * 2 + j], type);
          w.dense[r * cols + c] = from_bits(bits, type);
        }
        w.values[(r * groups + g) * 2 + j] = bits;
      }
      w.meta[r * words + g / 8] |= static_cast<uint32_t>(i0 | (i1 << 2)) << (4 * (g % 8));
    }
  }
  return w;
}

// V:2:M: per V x M block 4 kept columns (ascending; offsets past `cols` carry 0), per row 2 of
// them.
inline SparseWeights random_vnm(int64_t rows, int64_t cols, int v, int m, cuda::ElemType type,
                                uint64_t seed) {
  SparseWeights w;
  w.rows = rows;
  w.cols = cols;
  const int64_t blocks = (cols + m - 1) / m, groups = (rows + v - 1) / v, words = (blocks + 7) / 8;
  w.dense.assign(rows * cols, 0.0f);
  w.values.assign(rows * blocks * 2, 0);
  w.meta.assign(rows * words, 0);
  w.columns.assign(groups * blocks * 4, 0);
  const auto vals = random_values(rows * blocks * 2, seed);
  std::mt19937_64 rng(seed ^ 0x51ed270b27a3ull);
  std::vector<int> perm(m);
  for (int64_t rb = 0; rb < groups; ++rb) {
    for (int64_t cb = 0; cb < blocks; ++cb) {
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::sort(perm.begin(), perm.begin() + 4);
      for (int j = 0; j < 4; ++j)
        w.columns[(rb * blocks + cb) * 4 + j] = static_cast<uint8_t>(perm[j]);
      for (int64_t r = rb * v; r < std::min<int64_t>(rows, (rb + 1) * v); ++r) {
        const auto [i0, i1] = two_of_four(rng);
        const int idx[2] = {i0, i1};
        for (int j = 0; j < 2; ++j) {
          const int64_t c = cb * m + perm[idx[j]];
          uint16_t bits = 0;
          if (c < cols) {
            bits = to_bits(vals[(r * blocks + cb) * 2 + j], type);
            w.dense[r * cols + c] = from_bits(bits, type);
          }
          w.values[(r * blocks + cb) * 2 + j] = bits;
        }
        w.meta[r * words + cb / 8] |= static_cast<uint32_t>(i0 | (i1 << 2)) << (4 * (cb % 8));
      }
    }
  }
  return w;
}

// Activations [m, ldx] in `type` bits; columns K..ldx-1 hold NaN so a kernel that reads past K
// poisons its output.
struct Activations {
  int64_t m = 0, cols = 0, ldx = 0;
  std::vector<uint16_t> bits;
  std::vector<float> values;  // [m, cols], the exact values
};

inline Activations random_activations(int64_t m, int64_t cols, cuda::ElemType type, uint64_t seed) {
  Activations a;
  a.m = m;
  a.cols = cols;
  a.ldx = (cols + 7) / 8 * 8 + 8;  // one spare 16-byte chunk of NaN past the edge
  a.bits.assign(m * a.ldx, to_bits(std::numeric_limits<float>::quiet_NaN(), type));
  a.values.assign(m * cols, 0.0f);
  const auto vals = random_values(m * cols, seed);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t k = 0; k < cols; ++k) {
      const uint16_t b = to_bits(vals[t * cols + k], type);
      a.bits[t * a.ldx + k] = b;
      a.values[t * cols + k] = from_bits(b, type);
    }
  return a;
}

// Y[m, rows] = X * W^T in double.
inline std::vector<float> reference_gemm(const Activations& x, const SparseWeights& w) {
  std::vector<float> y(x.m * w.rows);
  for (int64_t t = 0; t < x.m; ++t)
    for (int64_t n = 0; n < w.rows; ++n) {
      double sum = 0;
      const float* xr = x.values.data() + t * x.cols;
      const float* wr = w.dense.data() + n * w.cols;
      for (int64_t k = 0; k < w.cols; ++k) sum += double(xr[k]) * wr[k];
      y[t * w.rows + n] = static_cast<float>(sum);
    }
  return y;
}

// For benchmark-size products, where the double reference of every token is too slow: expects
// every output of y[x.m, w.rows] finite, and `samples` random tokens' rows within 1e-2 (relative
// Frobenius) of the double reference.
inline void expect_sampled_tokens_match_reference(const std::vector<float>& y, const Activations& x,
                                                  const SparseWeights& w, int samples,
                                                  uint64_t seed) {
  int64_t bad = 0;
  for (float v : y) bad += !std::isfinite(v);
  EXPECT_EQ(bad, 0) << "unwritten or non-finite outputs";
  std::mt19937_64 rng(seed);
  Activations xs;
  xs.m = samples;
  xs.cols = x.cols;
  std::vector<float> got;
  for (int i = 0; i < samples; ++i) {
    const int64_t t = static_cast<int64_t>(rng() % x.m);
    xs.values.insert(xs.values.end(), x.values.begin() + t * x.cols,
                     x.values.begin() + (t + 1) * x.cols);
    got.insert(got.end(), y.begin() + t * w.rows, y.begin() + (t + 1) * w.rows);
  }
  EXPECT_LE(relative_error(got, reference_gemm(xs, w)), 1e-2);
}

// y[m, rows] as floats from the raw bytes of a [m, ldy] output in `y_type`; `padding_intact`
// is cleared when a column past `rows` is not NaN (the poison) any more.
inline std::vector<float> unpack_y(const std::vector<unsigned char>& raw, int64_t m, int64_t rows,
                                   int64_t ldy, cuda::ElemType y_type, bool& padding_intact) {
  const size_t elem = y_type == cuda::ElemType::F32 ? 4 : 2;
  std::vector<float> y(m * rows);
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t n = 0; n < ldy; ++n) {
      const unsigned char* e = raw.data() + (t * ldy + n) * elem;
      float v;
      if (elem == 4) {
        std::memcpy(&v, e, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, e, 2);
        v = from_bits(b, y_type);
      }
      if (n < rows) {
        y[t * rows + n] = v;
      } else if (!std::isnan(v)) {
        padding_intact = false;
      }
    }
  }
  return y;
}

// Runs `launch(problem)` twice on device copies of x and a NaN-poisoned y ([m, ldy], with
// padding columns past `rows` that must stay untouched: 3 floats / 4 halves, or ldy_pad
// elements) and returns y[m, rows] as floats.
struct DeviceRun {
  std::vector<float> y;
  bool padding_intact = true;  // nothing written past column `rows`
  bool repeatable = true;      // the second call gave the same bytes (counters reset)
};

template <typename Launch>
DeviceRun run_on_device(const Activations& x, int64_t rows, cuda::ElemType y_type,
                        size_t workspace_bytes, int ctas, Launch&& launch, int64_t ldy_pad = -1) {
  using cuda::check_cuda;
  cuda::DeviceBuffer dx(x.bits.size() * 2);
  dx.upload(x.bits.data(), x.bits.size() * 2);
  const int64_t ldy = rows + (ldy_pad >= 0 ? ldy_pad : y_type == cuda::ElemType::F32 ? 3 : 4);
  const size_t elem = y_type == cuda::ElemType::F32 ? 4 : 2;
  cuda::DeviceBuffer dy(x.m * ldy * elem);
  cuda::DeviceBuffer ws(std::max<size_t>(workspace_bytes, 16));
  check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
  cuda::GemmProblem p;
  p.x = dx.data();
  p.m = x.m;
  p.ldx = x.ldx;
  p.y = dy.data();
  p.ldy = ldy;
  p.y_type = y_type;
  p.workspace = ws.data();
  p.workspace_bytes = ws.bytes();
  p.ctas = ctas;
  std::vector<unsigned char> raw[2];
  for (int run = 0; run < 2; ++run) {
    check_cuda(cudaMemset(dy.data(), 0xff, x.m * ldy * elem), "poison y");  // NaN in every type
    check_cuda(launch(p), "launch");
    check_cuda(cudaDeviceSynchronize(), "kernel");
    raw[run].resize(x.m * ldy * elem);
    dy.download(raw[run].data(), raw[run].size());
  }
  DeviceRun out;
  out.repeatable = raw[0] == raw[1];
  out.y = unpack_y(raw[0], x.m, rows, ldy, y_type, out.padding_intact);
  return out;
}

}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
