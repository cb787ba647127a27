// The device gemm (sparsa/cuda_gemm.h) against the CPU reference gemm on the same packed
// matrices, and the CUDA Llama forward (sparsa/cuda_model.h) against the CPU forward: a tiny
// random Llama with dense, 2:4 and 64:2:8 layers, and SmolLM2 when its file is present.
// Skipped where no CUDA device is present (CTest label `gpu`).
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gpu_sparse_util.h"
#include "model_file.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_gemm.h"
#include "sparsa/cuda_model.h"
#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/half.h"
#include "sparsa/kernels.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"
#include "sparsa/tokenizer.h"
#include "test_util.h"
#include "tiny_llama.h"

namespace sparsa::test {
namespace {

using cuda::DeviceKind;
using cuda::DeviceMatrix;
using cuda::ElemType;

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// A random matrix pruned to `pattern` by magnitude and packed in the pattern's default format.
PackedMatrix random_packed(int64_t rows, int64_t cols, const Pattern& pattern, DType dtype,
                           uint64_t seed) {
  Tensor t = random_tensor("w", dtype, {rows, cols}, seed);
  if (pattern.kind != PatternKind::Dense) t = prune(t, pattern, *make_criterion("magnitude"));
  return pack(t, default_format(pattern), pattern);
}

struct GemmResult {
  std::vector<float> y;        // [m, N]
  bool padding_intact = true;  // columns N..ldy-1 of Y untouched
};

// Y = X W^T on the device; X holds `x` (already exactly representable in w.type()) with NaN
// past column K, Y is poisoned with NaN first.
GemmResult device_gemm(const DeviceMatrix& w, const std::vector<float>& x, int64_t m,
                       ElemType y_type) {
  // f32 Y: any ldy (odd when N is); fp16/bf16 Y: even.
  const int64_t k = w.cols(), n = w.rows(), ldx = round_up(k, 8) + 8,
                ldy = y_type == ElemType::F32 ? n + 5 : round_up(n, 2) + 6;
  std::vector<uint16_t> xb(m * ldx, to_bits(std::numeric_limits<float>::quiet_NaN(), w.type()));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) xb[i * ldx + j] = to_bits(x[i * k + j], w.type());
  const size_t elem = y_type == ElemType::F32 ? 4 : 2;
  cuda::DeviceBuffer dx(xb.size() * 2), dy(m * ldy * elem);
  dx.upload(xb.data(), xb.size() * 2);
  cuda::check_cuda(cudaMemset(dy.data(), 0xff, dy.bytes()), "poison y");
  cuda::GemmContext ctx;
  cuda::gemm(ctx, dx.data(), m, ldx, w, dy.data(), ldy, y_type);
  cuda::check_cuda(cudaDeviceSynchronize(), "gemm");
  std::vector<unsigned char> raw(dy.bytes());
  dy.download(raw.data(), raw.size());
  GemmResult r;
  r.y.resize(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < ldy; ++j) {
      float v;
      if (elem == 4) {
        std::memcpy(&v, raw.data() + (i * ldy + j) * 4, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, raw.data() + (i * ldy + j) * 2, 2);
        v = from_bits(b, y_type);
      }
      if (j < n)
        r.y[i * n + j] = v;
      else if (!std::isnan(v))
        r.padding_intact = false;
    }
  return r;
}

// X [m, K] with values exactly representable in `type`.
std::vector<float> random_x(int64_t m, int64_t k, ElemType type, uint64_t seed) {
  std::vector<float> x = random_values(m * k, seed);
  for (float& v : x) v = from_bits(to_bits(v, type), type);
  return x;
}

void check_gemm(const Pattern& pattern, DType dtype, int64_t n, int64_t k, int64_t m,
                ElemType y_type, DeviceKind expected, uint64_t seed) {
  SCOPED_TRACE(fmt::format("{} {} N={} K={} m={} y={}", pattern.to_string(), dtype_name(dtype), n,
                           k, m, y_type == ElemType::F32 ? "f32" : "half"));
  const PackedMatrix packed = random_packed(n, k, pattern, dtype, seed);
  const DeviceMatrix w = DeviceMatrix::upload(packed, "test.weight");
  EXPECT_EQ(w.kind(), expected);
  EXPECT_FALSE(w.densified());
  const ElemType type = dtype == DType::BF16 ? ElemType::BF16 : ElemType::F16;
  ASSERT_EQ(w.type(), type);
  const std::vector<float> x = random_x(m, k, type, seed + 7);
  std::vector<float> ref(m * n);
  gemm(x, m, packed, ref, Backend::Reference);
  const GemmResult r = device_gemm(w, x, m, y_type);
  EXPECT_TRUE(r.padding_intact) << "wrote past column N of Y";
  const double err = relative_error(r.y, ref);
  EXPECT_FALSE(std::isnan(err));
  // Inputs are exact in both; only the summation order differs (f32 Y), or the rounding of Y.
  const double bound = y_type == ElemType::F32 ? 1e-4 : (type == ElemType::BF16 ? 8e-3 : 1e-3);
  EXPECT_LE(err, bound);
}

struct Shape {
  int64_t n, k, m;
};
const Shape kShapes[] = {{77, 200, 1},  {128, 256, 5},  {200, 72, 16},
                         {96, 520, 17}, {333, 264, 64}, {64, 1000, 130}};

TEST(GpuDeviceGemm, DenseMatchesCpuReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 100;
  for (const Shape& s : kShapes) {
    check_gemm(Pattern{}, DType::F16, s.n, s.k, s.m, ElemType::F32, DeviceKind::Dense, seed++);
    check_gemm(Pattern{}, DType::BF16, s.n, s.k, s.m, ElemType::F32, DeviceKind::Dense, seed++);
  }
  check_gemm(Pattern{}, DType::F16, 77, 200, 9, ElemType::F16, DeviceKind::Dense, seed++);
}

TEST(GpuDeviceGemm, Nm24MatchesCpuReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  const Pattern p = Pattern::parse("2:4");
  uint64_t seed = 200;
  for (const Shape& s : kShapes) {
    check_gemm(p, DType::F16, s.n, s.k, s.m, ElemType::F32, DeviceKind::Nm24, seed++);
    check_gemm(p, DType::BF16, s.n, s.k, s.m, ElemType::F32, DeviceKind::Nm24, seed++);
  }
  check_gemm(p, DType::F16, 96, 520, 3, ElemType::F16, DeviceKind::Nm24, seed++);
  check_gemm(p, DType::F16, 96, 520, 40, ElemType::F16, DeviceKind::Nm24, seed++);
}

TEST(GpuDeviceGemm, VnmMatchesCpuReference) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 300;
  for (const char* text : {"64:2:8", "128:2:16", "32:2:5"}) {
    const Pattern p = Pattern::parse(text);
    for (const Shape& s : kShapes)
      check_gemm(p, DType::F16, s.n, s.k, s.m, ElemType::F32, DeviceKind::Vnm, seed++);
  }
  const Pattern p = Pattern::parse("64:2:8");
  check_gemm(p, DType::BF16, 333, 264, 7, ElemType::F32, DeviceKind::Vnm, seed++);
  check_gemm(p, DType::F16, 333, 264, 7, ElemType::F16, DeviceKind::Vnm, seed++);
  check_gemm(p, DType::F16, 333, 264, 70, ElemType::F16, DeviceKind::Vnm, seed++);
}

TEST(GpuDeviceGemm, UnsupportedFormatsAreRefusedOrDensified) {
  SPARSA_SKIP_WITHOUT_GPU();
  const auto expect_refused = [](const PackedMatrix& p, const std::vector<std::string>& phrases) {
    try {
      DeviceMatrix::upload(p, "blk.7.ffn_up.weight");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("blk.7.ffn_up.weight"), std::string::npos) << msg;
      for (const auto& s : phrases) EXPECT_NE(msg.find(s), std::string::npos) << msg;
    }
  };
  const Pattern unstructured = Pattern::parse("unstructured:0.5");
  const PackedMatrix csr = random_packed(70, 96, unstructured, DType::F16, 1);
  expect_refused(csr, {"csr", "F16"});
  expect_refused(random_packed(70, 96, Pattern{}, DType::F32, 2), {"dense", "F32"});
  expect_refused(random_packed(70, 96, Pattern::parse("2:8"), DType::F16, 3), {"nm 2:8"});
  expect_refused(random_packed(70, 96, Pattern::parse("2:4"), DType::F32, 4), {"nm 2:4", "F32"});

  // The documented fallback: unpacked to dense f16, same product through cuBLAS.
  for (const PackedMatrix* p : {&csr}) {
    const DeviceMatrix w = DeviceMatrix::upload(*p, "fallback", cuda::Fallback::Dense);
    EXPECT_TRUE(w.densified());
    EXPECT_EQ(w.kind(), DeviceKind::Dense);
    const std::vector<float> x = random_x(5, 96, ElemType::F16, 9);
    std::vector<float> ref(5 * 70);
    gemm(x, 5, *p, ref, Backend::Reference);
    EXPECT_LE(relative_error(device_gemm(w, x, 5, ElemType::F32).y, ref), 1e-4);
  }
  const PackedMatrix f32 = random_packed(70, 96, Pattern::parse("2:4"), DType::F32, 5);
  const DeviceMatrix w = DeviceMatrix::upload(f32, "f32 fallback", cuda::Fallback::Dense);
  EXPECT_TRUE(w.densified());
  EXPECT_EQ(w.type(), ElemType::F16);
}

// Compressed matrices (sparsa/codec.h) stay compressed on the device and run the kernels that
// read their codes, against the CPU's compressed_gemm on the same compressed matrix: 2:4, 64:2:8,
// 128:2:16 and unstructured 50% as a bitmap, each with int8, int4 and codebook4, ragged shapes,
// m from 1 to 600 (above 16: 2:4 and V:2:M through the device expansion and their prefill
// kernels — 2:4 m = 40 the mma.sp kernel, 70 and 600 the wgmma ones on an H100; 64:2:8 m = 17
// and 70, 128:2:16 m = 600 —, bitmap in blocks of 16 rows), f32 and f16 Y. The kernels round
// each dequantised value to fp16, the CPU keeps f32: relative error <= 2e-3. A codec no kernel
// reads (dense + int8, 2:4 + codebook8) is refused naming the matrix and the codec, or with
// Fallback::Dense decompressed and uploaded as the packed matrix (2:4 then runs nm 2:4).
TEST(GpuDeviceGemm, CompressedMatricesReadTheirCodes) {
  SPARSA_SKIP_WITHOUT_GPU();
  struct Case {
    const char* pattern;
    FormatKind format;
    int64_t n, k, m;
  };
  const Case cases[] = {
      {"2:4", FormatKind::NM, 77, 200, 1},        {"2:4", FormatKind::NM, 200, 520, 16},
      {"2:4", FormatKind::NM, 96, 264, 40},       {"2:4", FormatKind::NM, 200, 1000, 70},
      {"2:4", FormatKind::NM, 300, 520, 600},     {"64:2:8", FormatKind::VNM, 200, 264, 5},
      {"64:2:8", FormatKind::VNM, 130, 512, 17},  {"64:2:8", FormatKind::VNM, 200, 1000, 70},
      {"128:2:16", FormatKind::VNM, 300, 700, 600}, {"unstructured:0.5", FormatKind::Bitmap, 70, 300, 3},
      {"unstructured:0.5", FormatKind::Bitmap, 128, 256, 33},
  };
  uint64_t seed = 700;
  for (const Case& c : cases)
    for (const char* codec : {"int8", "int4", "codebook4"}) {
      SCOPED_TRACE(fmt::format("{} {} N={} K={} m={}", c.pattern, codec, c.n, c.k, c.m));
      const Pattern pattern = Pattern::parse(c.pattern);
      Tensor t = random_tensor("w", DType::F16, {c.n, c.k}, ++seed);
      t = prune(t, pattern, *make_criterion("magnitude"));
      const CompressedMatrix compressed = compress(pack(t, c.format, pattern), CodecParams::parse(codec));
      const DeviceMatrix w = DeviceMatrix::upload(compressed, "blk.3.ffn_down.weight");
      EXPECT_EQ(w.kind(), DeviceKind::Compressed);
      EXPECT_EQ(w.type(), ElemType::F16);
      EXPECT_GT(w.device_bytes(), 0u);
      const std::vector<float> x = random_x(c.m, c.k, ElemType::F16, seed + 50);
      std::vector<float> ref(c.m * c.n);
      compressed_gemm(x, c.m, compressed, ref, Backend::Reference);
      for (const ElemType y_type : {ElemType::F32, ElemType::F16}) {
        const GemmResult r = device_gemm(w, x, c.m, y_type);
        EXPECT_TRUE(r.padding_intact);
        const double err = relative_error(r.y, ref);
        EXPECT_LE(err, 2e-3);
        EXPECT_FALSE(std::isnan(err));
      }
    }
  const PackedMatrix nm = random_packed(96, 256, Pattern::parse("2:4"), DType::F16, 31);
  for (const auto& [packed, codec] : {std::pair{random_packed(64, 96, Pattern{}, DType::F16, 30), "int8"},
                                      std::pair{nm, "codebook8"}}) {
    const CompressedMatrix compressed = compress(packed, CodecParams::parse(codec));
    expect_error([&] { DeviceMatrix::upload(compressed, "blk.1.attn_v.weight"); },
                 {"blk.1.attn_v.weight", codec, "no GPU kernel"});
    const DeviceMatrix w = DeviceMatrix::upload(compressed, "blk.1.attn_v.weight", cuda::Fallback::Dense);
    EXPECT_EQ(w.kind(), packed.format == FormatKind::NM ? DeviceKind::Nm24 : DeviceKind::Dense);
    const std::vector<float> x = random_x(5, packed.cols, ElemType::F16, 32);
    std::vector<float> ref(5 * packed.rows);
    compressed_gemm(x, 5, compressed, ref, Backend::Reference);
    EXPECT_LE(relative_error(device_gemm(w, x, 5, ElemType::F32).y, ref), 2e-3);
  }
}

TEST(GpuDeviceGemm, BadArgumentsNameTheMatrix) {
  SPARSA_SKIP_WITHOUT_GPU();
  const DeviceMatrix w = DeviceMatrix::upload(
      random_packed(64, 96, Pattern::parse("2:4"), DType::F16, 11), "blk.0.attn_q.weight");
  cuda::DeviceBuffer x(16 * 104 * 2), y(16 * 64 * 4);
  cuda::GemmContext ctx;
  expect_error([&] { cuda::gemm(ctx, x.data(), 4, 90, w, y.data(), 64); },
               {"blk.0.attn_q.weight", "ldx 90"});
  expect_error([&] { cuda::gemm(ctx, x.data(), 4, 100, w, y.data(), 64); },
               {"blk.0.attn_q.weight", "ldx 100"});
  expect_error([&] { cuda::gemm(ctx, x.data(), 4, 104, w, y.data(), 60); },
               {"blk.0.attn_q.weight", "ldy 60"});
  expect_error([&] { cuda::gemm(ctx, x.data(), 4, 104, w, y.data(), 65, ElemType::F16); },
               {"blk.0.attn_q.weight", "ldy 65"});
  expect_error([&] { cuda::gemm(ctx, x.data(), 4, 104, w, y.data(), 64, ElemType::BF16); },
               {"blk.0.attn_q.weight", "bf16"});
  expect_error([&] { cuda::gemm(ctx, x.data(), 0, 104, w, y.data(), 64); },
               {"blk.0.attn_q.weight", "0 rows"});
}

// ---- stacked (fused) products ------------------------------------------------------------------

// Dense rows of a packed matrix, stacked: the reference for concat_rows.
std::vector<float> stacked_dense(const std::vector<const PackedMatrix*>& parts) {
  std::vector<float> out;
  for (const PackedMatrix* p : parts) {
    const std::vector<float> d = unpack(*p).to_f32();
    out.insert(out.end(), d.begin(), d.end());
  }
  return out;
}

// Needs no GPU: concat_rows is host code of the CUDA library.
TEST(GpuFusedProducts, ConcatRowsStacksPackedMatrices) {
  uint64_t seed = 300;
  struct Case {
    const char* pattern;
    std::vector<int64_t> rows;
  };
  // The last part may be ragged (vnm: not a whole block of V rows).
  const Case cases[] = {{"dense", {64, 32, 37}},   {"2:4", {64, 32, 32}},  {"2:4", {9, 3, 5}},
                        {"32:2:5", {64, 32, 45}}, {"64:2:8", {128, 64}}, {"16:2:4", {16, 48, 7}}};
  for (const Case& c : cases) {
    for (DType dtype : {DType::F16, DType::BF16}) {
      SCOPED_TRACE(fmt::format("{} {}", c.pattern, dtype_name(dtype)));
      const Pattern pattern = Pattern::parse(c.pattern);
      std::vector<PackedMatrix> owned;
      for (int64_t r : c.rows) owned.push_back(random_packed(r, 120, pattern, dtype, seed++));
      std::vector<const PackedMatrix*> parts;
      for (const PackedMatrix& p : owned) parts.push_back(&p);
      ASSERT_TRUE(cuda::rows_concatenable(parts));
      const PackedMatrix stacked = cuda::concat_rows(parts, "blk.0.qkv");
      int64_t total = 0;
      for (int64_t r : c.rows) total += r;
      EXPECT_EQ(stacked.rows, total);
      EXPECT_EQ(stacked.cols, 120);
      EXPECT_EQ(stacked.format, owned[0].format);
      const std::vector<float> got = unpack(stacked).to_f32();  // also validates the layout
      const std::vector<float> want = stacked_dense(parts);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_TRUE(got == want) << "stacked matrix differs from the stacked parts";
    }
  }
}

TEST(GpuFusedProducts, ConcatRowsRefusesWhatDoesNotStack) {
  const PackedMatrix v40 = random_packed(40, 120, Pattern::parse("32:2:5"), DType::F16, 1);
  const PackedMatrix v32 = random_packed(32, 120, Pattern::parse("32:2:5"), DType::F16, 2);
  const PackedMatrix v32b = random_packed(32, 120, Pattern::parse("32:2:6"), DType::F16, 3);
  const PackedMatrix nm = random_packed(32, 120, Pattern::parse("2:4"), DType::F16, 4);
  const PackedMatrix nm_wide = random_packed(32, 128, Pattern::parse("2:4"), DType::F16, 5);
  const PackedMatrix nm_bf16 = random_packed(32, 120, Pattern::parse("2:4"), DType::BF16, 6);
  const PackedMatrix csr =
      random_packed(32, 120, Pattern::parse("unstructured:0.5"), DType::F16, 7);
  struct Bad {
    std::vector<const PackedMatrix*> parts;
    const char* reason;
  };
  const Bad bad[] = {{{&v40, &v32}, "multiple of V = 32"},
                     {{&v32, &v32b}, "patterns differ"},
                     {{&nm, &v32}, "formats differ"},
                     {{&nm, &nm_wide}, "column counts differ"},
                     {{&nm, &nm_bf16}, "value types differ"},
                     {{&csr, &csr}, "csr"},
                     {{}, "no matrices"}};
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.reason);
    EXPECT_FALSE(cuda::rows_concatenable(b.parts));
    expect_error([&] { cuda::concat_rows(b.parts, "blk.7.attn_qkv"); },
                 {"blk.7.attn_qkv", b.reason});
  }
  // V-row blocks whole in every part but the last: fine.
  const std::vector<const PackedMatrix*> ok{&v32, &v40};
  EXPECT_TRUE(cuda::rows_concatenable(ok));
}

// One product over stacked q|k|v rows gives each part's product in its columns.
TEST(GpuFusedProducts, StackedProductEqualsSeparateProducts) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 400;
  for (const char* text : {"dense", "2:4", "32:2:5", "64:2:8"}) {
    const Pattern pattern = Pattern::parse(text);
    const int64_t v = pattern.kind == PatternKind::VNM ? pattern.v : 1;
    const std::vector<int64_t> rows{9 * v > 64 ? 2 * v : 64, v > 1 ? v : 32, v > 1 ? v : 45};
    for (int64_t m : {1, 5}) {
      SCOPED_TRACE(fmt::format("{} m={}", text, m));
      const int64_t k = 200;
      std::vector<PackedMatrix> owned;
      for (int64_t r : rows) owned.push_back(random_packed(r, k, pattern, DType::F16, seed++));
      std::vector<const PackedMatrix*> parts;
      for (const PackedMatrix& p : owned) parts.push_back(&p);
      const PackedMatrix stacked = cuda::concat_rows(parts, "blk.0.qkv");
      const DeviceMatrix fused = DeviceMatrix::upload(stacked, "blk.0.qkv");
      const std::vector<float> x = random_x(m, k, ElemType::F16, seed++);
      const GemmResult all = device_gemm(fused, x, m, ElemType::F32);
      EXPECT_TRUE(all.padding_intact);
      int64_t column = 0;
      for (size_t i = 0; i < owned.size(); ++i) {
        const DeviceMatrix one = DeviceMatrix::upload(owned[i], "part");
        const GemmResult part = device_gemm(one, x, m, ElemType::F32);
        std::vector<float> slice;
        for (int64_t r = 0; r < m; ++r)
          for (int64_t j = 0; j < owned[i].rows; ++j)
            slice.push_back(all.y[r * stacked.rows + column + j]);
        // Same inputs, fp32 accumulation; only the split of the sums may differ.
        EXPECT_LE(relative_error(slice, part.y), 1e-5) << "part " << i;
        std::vector<float> ref(m * owned[i].rows);
        gemm(x, m, owned[i], ref, Backend::Reference);
        EXPECT_LE(relative_error(slice, ref), 1e-4) << "part " << i;
        column += owned[i].rows;
      }
    }
  }
}

// ---- the CUDA forward ------------------------------------------------------------------------

// Argmax agreement and relative error of two [rows, vocab] logit blocks.
struct Agreement {
  double error = 0;
  int64_t same_argmax = 0, rows = 0;
};
Agreement compare_logits(const std::vector<float>& gpu, const std::vector<float>& cpu,
                         int64_t vocab) {
  Agreement a;
  a.error = relative_error(gpu, cpu);
  a.rows = int64_t(cpu.size()) / vocab;
  for (int64_t r = 0; r < a.rows; ++r) {
    const auto arg = [&](const std::vector<float>& v) {
      return std::max_element(v.begin() + r * vocab, v.begin() + (r + 1) * vocab) - v.begin();
    };
    a.same_argmax += arg(gpu) == arg(cpu);
  }
  return a;
}

// Prompt (all logits), then `steps` single-token decode steps fed the CPU's greedy choice; both
// forwards see the same tokens. Returns the worst relative error and the argmax agreement.
Agreement compare_forwards(const LlamaModel& model, const std::vector<int32_t>& prompt, int steps,
                           cuda::CudaForwardOptions options = {}) {
  const int64_t vocab = model.config().vocab_size;
  cuda::CudaLlama gpu(model, cuda::Fallback::Error, options);
  LlamaState cpu_state(model.config(), int64_t(prompt.size()) + steps);
  cuda::CudaLlamaState gpu_state(gpu, int64_t(prompt.size()) + steps);
  std::vector<float> cpu_logits = model.forward(cpu_state, prompt, true);
  std::vector<float> gpu_logits = gpu.forward(gpu_state, prompt, true);
  Agreement total = compare_logits(gpu_logits, cpu_logits, vocab);
  for (int s = 0; s < steps; ++s) {
    const auto last = cpu_logits.end() - vocab;
    const int32_t next = int32_t(std::max_element(last, cpu_logits.end()) - last);
    cpu_logits = model.forward(cpu_state, std::span(&next, 1));
    gpu_logits = gpu.forward(gpu_state, std::span(&next, 1));
    const Agreement a = compare_logits(gpu_logits, cpu_logits, vocab);
    total.error = std::max(total.error, a.error);
    total.same_argmax += a.same_argmax;
    total.rows += a.rows;
  }
  EXPECT_EQ(gpu_state.position(), cpu_state.position());
  // The first one-token step runs the direct launches, the second captures the graph.
  EXPECT_EQ(gpu.graph_replays(), options.graphs ? std::max(steps - 1, 0) : 0);
  return total;
}

LlamaModel tiny_model(const std::string& pattern_text, DType dtype) {
  TinyLlama m;
  const auto path = write_tiny(m, temp_dir());
  LlamaModel model = LlamaModel::from_gguf(GgufFile::open(path), {dtype});
  const Pattern pattern = Pattern::parse(pattern_text);
  if (pattern.kind != PatternKind::Dense) {
    prune_model(model, "magnitude", pattern, nullptr);
    pack_model(model, pattern);
  }
  return model;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = int32_t(rng() % uint64_t(vocab));
  return t;
}

TEST(GpuForward, TinyLlamaMatchesCpuForward) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 1;
  for (const char* pattern : {"dense", "2:4", "64:2:8", "32:2:5"}) {
    const LlamaModel model = tiny_model(pattern, DType::F16);
    const auto prompt = random_tokens(21, model.config().vocab_size, seed++);
    // Decode through the graph, through direct launches, and with the products unfused.
    for (const cuda::CudaForwardOptions options :
         {cuda::CudaForwardOptions{true, true}, cuda::CudaForwardOptions{false, true},
          cuda::CudaForwardOptions{true, false}}) {
      SCOPED_TRACE(fmt::format("{} graphs={} fused={}", pattern, options.graphs,
                               options.fuse_products));
      const Agreement a = compare_forwards(model, prompt, 6, options);
      // fp16 weights in both; the GPU also rounds the products' inputs to fp16.
      EXPECT_LE(a.error, 2e-2);
      EXPECT_GE(a.same_argmax, a.rows * 9 / 10) << a.same_argmax << " of " << a.rows;
      fmt::print("tiny {} (graphs {}, fused {}): max rel error {:.2e}, same argmax {} / {}\n",
                 pattern, options.graphs, options.fuse_products, a.error, a.same_argmax, a.rows);
    }
  }
}

// Layers pruned after an input-channel permutation (sparsa prune --permute) gather their input
// through Linear::input_perm on the GPU as on the CPU.
TEST(GpuForward, PermutedTinyLlamaMatchesCpuForward) {
  SPARSA_SKIP_WITHOUT_GPU();
  for (const char* text : {"2:4", "64:2:8"}) {
    SCOPED_TRACE(text);
    TinyLlama m;
    LlamaModel model = LlamaModel::from_gguf(GgufFile::open(write_tiny(m, temp_dir())),
                                             {DType::F16});
    const Pattern pattern = Pattern::parse(text);
    permute_model(model, "magnitude", pattern, nullptr);
    int64_t permuted = 0;
    for (const Linear* l : model.linears()) permuted += l->input_perm.empty() ? 0 : 1;
    ASSERT_GT(permuted, 0) << "no layer got a permutation: the test would prove nothing";
    prune_model(model, "magnitude", pattern, nullptr);
    pack_model(model, pattern);
    const Agreement a = compare_forwards(model, random_tokens(17, model.config().vocab_size, 9), 5);
    EXPECT_LE(a.error, 2e-2);
    EXPECT_GE(a.same_argmax, a.rows * 9 / 10) << a.same_argmax << " of " << a.rows;
    // q/k/v and gate/up share one permutation each (permute_model), so 2:4 keeps its stacked
    // products (4 per layer); 64:2:8 cannot stack the tiny model's 32-row k/v anyway.
    const int64_t layers = model.config().n_layers;
    const bool stacks = std::string(text) == "2:4";
    EXPECT_EQ(cuda::CudaLlama(model).layer_products(), (stacks ? 4 : 7) * layers);
  }
}

// cuda::perplexity scores the same windows as the CPU's sparsa::perplexity (one shared driver):
// same window count and scored tokens, and a perplexity within fp16 rounding of the CPU's.
TEST(GpuForward, PerplexityMatchesCpu) {
  SPARSA_SKIP_WITHOUT_GPU();
  const LlamaModel model = tiny_model("2:4", DType::F16);
  const auto tokens = random_tokens(45, model.config().vocab_size, 31);  // 2 windows of 16 + 13
  cuda::CudaLlama gpu(model);
  const PerplexityResult on_cpu = perplexity(model, tokens, 16);
  const PerplexityResult on_gpu = cuda::perplexity(gpu, tokens, 16);
  EXPECT_EQ(on_gpu.windows, on_cpu.windows);
  EXPECT_EQ(on_gpu.scored_tokens, on_cpu.scored_tokens);
  EXPECT_EQ(on_gpu.windows, 3);
  EXPECT_NEAR(on_gpu.mean_nll, on_cpu.mean_nll, 1e-2 * std::abs(on_cpu.mean_nll));
  EXPECT_EQ(cuda::perplexity(gpu, tokens, 16, 1).windows, 1);
  EXPECT_THROW(cuda::perplexity(gpu, tokens, 1), Error);
}

TEST(GpuForward, TinyLlamaBf16MatchesCpuForward) {
  SPARSA_SKIP_WITHOUT_GPU();
  const LlamaModel model = tiny_model("2:4", DType::BF16);
  const Agreement a = compare_forwards(model, random_tokens(15, model.config().vocab_size, 77), 3);
  EXPECT_LE(a.error, 6e-2);  // bf16 keeps 8 bits of mantissa
  EXPECT_GE(a.same_argmax, a.rows * 3 / 4);
}

// The decode graph replays the launches it captured with the position of each step: its logits
// equal those of the direct launches bit for bit, step after step, for dense and packed layers,
// fused or not. The tiny model (q 64, k/v 32, gate/up 96 rows): 2:4 and 32:2:5 stack q|k|v and
// gate|up, 64:2:8 cannot (32 k rows and 96 gate rows are not whole blocks of 64).
TEST(GpuForward, GraphDecodeEqualsDirectLaunches) {
  SPARSA_SKIP_WITHOUT_GPU();
  uint64_t seed = 50;
  for (const char* pattern : {"dense", "2:4", "64:2:8", "32:2:5"}) {
    SCOPED_TRACE(pattern);
    const LlamaModel model = tiny_model(pattern, DType::F16);
    const int64_t vocab = model.config().vocab_size, layers = model.config().n_layers;
    cuda::CudaLlama graphed(model, cuda::Fallback::Error, {true, true});
    cuda::CudaLlama direct(model, cuda::Fallback::Error, {false, true});
    const bool stacks = std::string(pattern) != "64:2:8";
    EXPECT_EQ(graphed.layer_products(), (stacks ? 4 : 7) * layers);
    EXPECT_EQ(cuda::CudaLlama(model, cuda::Fallback::Error, {true, false}).layer_products(),
              7 * layers);
    const auto prompt = random_tokens(7, vocab, seed++);
    cuda::CudaLlamaState gs(graphed, 20), ds(direct, 20);
    std::vector<float> g = graphed.forward(gs, prompt);
    std::vector<float> d = direct.forward(ds, prompt);
    EXPECT_TRUE(g == d) << "prompt logits differ";
    for (int step = 0; step < 8; ++step) {
      const int32_t next = int32_t(std::max_element(d.begin(), d.end()) - d.begin());
      g = graphed.forward(gs, std::span(&next, 1));
      d = direct.forward(ds, std::span(&next, 1));
      ASSERT_EQ(g.size(), size_t(vocab));
      EXPECT_TRUE(g == d) << "step " << step << ": graph logits differ from the direct launches "
                          << "(relative error " << relative_error(g, d) << ")";
    }
    EXPECT_EQ(graphed.graph_replays(), 7);  // the first step runs the direct launches
    EXPECT_EQ(graphed.graph_captures(), 1);
    EXPECT_EQ(direct.graph_replays(), 0);
  }
}

// A graph holds the cache's pointers: another state, or scratch grown by a longer prompt,
// makes the next decode step capture again, and the logits stay those of the direct launches.
TEST(GpuForward, GraphFollowsStatesAndScratch) {
  SPARSA_SKIP_WITHOUT_GPU();
  const LlamaModel model = tiny_model("2:4", DType::F16);
  const int64_t vocab = model.config().vocab_size;
  cuda::CudaLlama graphed(model, cuda::Fallback::Error, {true, true});
  cuda::CudaLlama direct(model, cuda::Fallback::Error, {false, true});
  const auto tokens = random_tokens(30, vocab, 77);
  const std::span<const int32_t> t(tokens);
  cuda::CudaLlamaState ga(graphed, 32), gb(graphed, 24), da(direct, 32), db(direct, 24);
  const auto both = [&](cuda::CudaLlamaState& g, cuda::CudaLlamaState& d,
                        std::span<const int32_t> in, const char* what) {
    const auto lg = graphed.forward(g, in);
    const auto ld = direct.forward(d, in);
    EXPECT_TRUE(lg == ld) << what << " (relative error " << relative_error(lg, ld) << ")";
  };
  // The first one-token step with new buffers runs the direct launches; the second captures.
  both(ga, da, t.subspan(0, 3), "a: prompt");
  both(ga, da, t.subspan(3, 1), "a: step 1");
  EXPECT_EQ(graphed.graph_captures(), 0);
  both(ga, da, t.subspan(4, 1), "a: step 2");
  EXPECT_EQ(graphed.graph_captures(), 1);
  both(gb, db, t.subspan(10, 2), "b: prompt");
  both(gb, db, t.subspan(12, 1), "b: step 1");  // another cache
  both(gb, db, t.subspan(13, 1), "b: step 2");  // captured again
  EXPECT_EQ(graphed.graph_captures(), 2);
  both(ga, da, t.subspan(5, 1), "a: step 3");  // back to a
  both(ga, da, t.subspan(6, 1), "a: step 4");
  EXPECT_EQ(graphed.graph_captures(), 3);
  both(ga, da, t.subspan(7, 12), "a: longer prompt (grows the scratch)");
  both(ga, da, t.subspan(19, 1), "a: step after growing");
  both(ga, da, t.subspan(20, 1), "a: next step");
  both(ga, da, t.subspan(21, 1), "a: and the next");
  EXPECT_EQ(graphed.graph_captures(), 4);
  EXPECT_EQ(graphed.graph_replays(), 5);
  ga.reset();
  da.reset();
  both(ga, da, t.subspan(0, 1), "a: after reset");  // position 0 through the graph
  EXPECT_EQ(graphed.graph_replays(), 6);
}

TEST(GpuForward, CacheCarriesAcrossCallsAndResets) {
  SPARSA_SKIP_WITHOUT_GPU();
  const LlamaModel model = tiny_model("2:4", DType::F16);
  cuda::CudaLlama gpu(model);
  const auto tokens = random_tokens(12, model.config().vocab_size, 5);
  // The whole sequence at once vs in pieces of 5, 1, 6 tokens: the same last logits.
  cuda::CudaLlamaState whole(gpu, 12), parts(gpu, 12);
  const auto once = gpu.forward(whole, tokens);
  const std::span<const int32_t> t(tokens);
  gpu.forward(parts, t.subspan(0, 5));
  gpu.forward(parts, t.subspan(5, 1));
  const auto pieces = gpu.forward(parts, t.subspan(6, 6));
  EXPECT_LE(relative_error(pieces, once), 1e-3);
  parts.reset();
  EXPECT_LE(relative_error(gpu.forward(parts, tokens), once), 1e-6);
  // Errors name the problem.
  EXPECT_THROW(gpu.forward(parts, t.subspan(0, 1)), Error);  // cache full
  const int32_t bad = int32_t(model.config().vocab_size);
  parts.reset();
  try {
    gpu.forward(parts, std::span(&bad, 1));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos);
  }
}

TEST(GpuForward, UnsupportedLayersNameTheLayer) {
  SPARSA_SKIP_WITHOUT_GPU();
  const LlamaModel csr = tiny_model("unstructured:0.5", DType::F16);
  try {
    cuda::CudaLlama gpu(csr);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("blk.0.attn_q.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("csr"), std::string::npos) << msg;
  }
  cuda::CudaLlama gpu(csr, cuda::Fallback::Dense);
  EXPECT_EQ(gpu.densified_layers(), 2 * 7);
  const LlamaModel f32 = tiny_model("dense", DType::F32);
  EXPECT_THROW(cuda::CudaLlama{f32}, Error);
}

TEST(GpuForward, SmolLm2MatchesCpuForward) {
  SPARSA_SKIP_WITHOUT_GPU();
  SPARSA_REQUIRE_MODEL(path);
  const GgufFile file = GgufFile::open(path);
  const Tokenizer tokenizer = Tokenizer::from_gguf(file);
  const std::vector<int32_t> prompt = tokenizer.encode("The capital of France is");
  for (const char* pattern : {"dense", "2:4"}) {
    SCOPED_TRACE(pattern);
    LlamaModel model = LlamaModel::from_gguf(file, {DType::F16});
    const Pattern p = Pattern::parse(pattern);
    if (p.kind != PatternKind::Dense) {
      prune_model(model, "magnitude", p, nullptr);
      pack_model(model, p);
    }
    const Agreement a = compare_forwards(model, prompt, 4);
    fmt::print("SmolLM2 {}: max rel error {:.2e}, same argmax {} / {}\n", pattern, a.error,
               a.same_argmax, a.rows);
    EXPECT_LE(a.error, 3e-2);
    EXPECT_GE(a.same_argmax, a.rows - 1);
  }
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
