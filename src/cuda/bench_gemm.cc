// `sparsa bench gemm` (see sparsa/cuda_bench.h): GPU sparse GEMMs vs cuBLAS fp16 dense and
// cuSPARSELt 2:4, fp16 in, fp32 accumulate, fp16 out, at the shapes.
//
// Method: weights are generated on the device directly in the GPU tiling (random fp16 values,
// random valid metadata, random sorted V:N:M column sets); several copies of every weight set
// (and of the dense cuBLAS weights) are rotated so that each launch streams its weights from
// HBM, not L2. Two timings (bench_timing.h), both medians after a warm-up: per call (each launch
// between its own pair of CUDA events: time_us, cublas_us, cusparselt_us) and graph (kGraphCalls
// consecutive calls over the rotated copies captured into one CUDA graph, events around each
// replay, divided by the calls: graph_time_us, graph_cublas_us, graph_cusparselt_us), the second
// being how a model's decode runs. Every (pattern, shape, m) is also checked: a sample of outputs
// against a double-precision CPU product of the same weights, decoded from the tiling on the
// host, and every output of a graph replay bit for bit against a direct call. 2:4 prefill records
// also time the opt-in second-layout kernel (prefill_layout_us) on the same weights.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cuda/bench_compressed.h"
#include "cuda/bench_fill.h"
#include "cuda/bench_timing.h"
#include "cuda/wgmma_prefill_tiles.h"
#include "cuda/decode_tuning.h"
#include "sparsa/cuda_bench.h"
#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"
#include "sparsa/half.h"
#include "sparsa/pattern.h"

#ifdef SPARSA_HAVE_CUSPARSELT
#include "cuda/baseline/cusparselt_baseline.h"
#endif

namespace sparsa::cuda {
namespace {

using bench::CallGraph;
using bench::median_us;
using nlohmann::ordered_json;

constexpr double kMaxError = 1e-2;
// Calls per timing graph; each writes its own Y (a model's layers do), up to kGraphYBytes.
constexpr int kGraphCalls = 20;
constexpr size_t kGraphYBytes = size_t{256} << 20;
// cuBLAS workspace given explicitly (its Hopper default size), so cuBLAS allocates nothing
// while a graph is captured.
constexpr size_t kCublasWorkspace = size_t{32} << 20;

// Output buffers of one timing graph: call i writes slot i % count.
struct YRing {
  std::vector<DeviceBuffer> slots;
  YRing(int64_t m, int64_t n) {
    const size_t bytes = static_cast<size_t>(m * n * 2);
    const size_t count = std::clamp<size_t>(kGraphYBytes / bytes, 1, kGraphCalls);
    for (size_t i = 0; i < count; ++i) slots.emplace_back(bytes);
  }
  void* at(int i) const { return slots[i % slots.size()].data(); }
};

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS: {}: status {}", what, static_cast<int>(status));
}

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

struct Env {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  DeviceBuffer cublas_workspace;
  cudaDeviceProp props{};
  int repeats = 30, warmup = 3;
  double prefill_warm_ms = 0;  // GemmBenchOptions::prefill_warm_ms
};

// Milliseconds of sustained launches before a measurement at m tokens (prefill only).
double warm_ms(const Env& env, int64_t m) { return m > kDecodeMaxM ? env.prefill_warm_ms : 0; }

// Weight copies rotated per launch: enough that their total is 4x the L2 cache, at least 2.
int copies_for(size_t bytes, const Env& env) {
  const double l2 = static_cast<double>(env.props.l2CacheSize);
  return static_cast<int>(std::clamp(std::ceil(4.0 * l2 / static_cast<double>(bytes)), 2.0, 64.0));
}

// ---- measured ceilings ----------------------------------------------------------------------
double measure_copy_tbps(Env& env) {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer a(bytes), b(bytes);
  check_cuda(cudaMemsetAsync(a.data(), 1, bytes, env.stream), "memset");
  const double us = median_us(
      [&](int) {
        return cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, env.stream);
      },
      2, 10, env.stream);
  return 2.0 * static_cast<double>(bytes) / (us * 1e-6) / 1e12;  // read + write
}

cudaError_t cublas_gemm(Env& env, const void* w, const void* x, void* y, int64_t n, int64_t k,
                        int64_t m) {
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: Y^T[n, m] = W[k, n]^T * X^T[k, m].
  const cublasStatus_t s =
      cublasGemmEx(env.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                   static_cast<int>(k), &alpha, w, CUDA_R_16F, static_cast<int>(k), x, CUDA_R_16F,
                   static_cast<int>(k), &beta, y, CUDA_R_16F, static_cast<int>(n),
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return s == CUBLAS_STATUS_SUCCESS ? cudaGetLastError() : cudaErrorUnknown;
}

double measure_dense_tflops(Env& env) {
  const int64_t s = 8192;
  DeviceBuffer a(s * s * 2), b(s * s * 2), c(s * s * 2);
  check_cuda(bench::fill_random_f16(static_cast<uint16_t*>(a.data()), s * s, 1, env.stream),
             "fill");
  check_cuda(bench::fill_random_f16(static_cast<uint16_t*>(b.data()), s * s, 2, env.stream),
             "fill");
  const double us =
      median_us([&](int) { return cublas_gemm(env, a.data(), b.data(), c.data(), s, s, s); }, 2, 10,
                env.stream);
  return 2.0 * s * s * s / (us * 1e-6) / 1e12;
}

// ---- weights in the GPU tiling, generated on the device ---------------------------------------
struct SparseSet {
  Pattern pattern;
  std::vector<DeviceBuffer> values, meta;
  // 2:4 on sm_90a: the row-major copies of the opt-in shared-memory-A prefill kernel (v8), timed
  // beside the default dispatch (SPARSA_PREFILL24=ss makes the default take them too).
  std::vector<DeviceBuffer> values_k;
  // V:2:M with SPARSA_VNM_PREFILL_COPY=1 (vnm_prefill_copy_wanted): each copy's held 2:4 tiling.
  std::vector<DeviceBuffer> prefill_values, prefill_meta;
  DeviceBuffer columns;
  std::vector<uint32_t> host_columns;
  Nm24Weights nm;  // pointers of copy 0; launches swap them per copy
  VnmWeights vnm;
  size_t bytes = 0;  // one copy: values + metadata + columns
  bool is_vnm() const { return pattern.kind == PatternKind::VNM; }
};

SparseSet make_sparse_set(const Pattern& pattern, int64_t n, int64_t k, Env& env, uint64_t seed) {
  SparseSet set;
  set.pattern = pattern;
  const int64_t rows_padded = round_up(n, kRowTile);
  int64_t value_count, meta_count;
  if (pattern.kind == PatternKind::NM) {
    const int64_t cols_padded = round_up(k, kKChunk);
    value_count = rows_padded * cols_padded / 2;
    meta_count = rows_padded / 16 * (cols_padded / 256) * 32 * 4;
    set.nm = {nullptr, nullptr, n, k, rows_padded, cols_padded, ElemType::F16};
  } else {
    const int v = pattern.v, m = pattern.m;
    const int64_t blocks = (k + m - 1) / m, blocks_padded = round_up(blocks, 64);
    const int64_t groups_padded = (rows_padded + v - 1) / v;
    value_count = rows_padded * blocks_padded * 2;
    meta_count = rows_padded / 16 * (blocks_padded / 64) * 32 * 4;
    set.vnm = {nullptr, nullptr, nullptr,      n, k, rows_padded, blocks_padded, groups_padded,
               v,       m,       ElemType::F16};
    // Random sorted 4-subsets of each block's M columns.
    set.host_columns.assign(groups_padded * blocks_padded, 0x03020100u);
    std::mt19937_64 rng(seed);
    std::vector<int> perm(m);
    for (auto& word : set.host_columns) {
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::sort(perm.begin(), perm.begin() + 4);
      word = uint32_t(perm[0]) | uint32_t(perm[1]) << 8 | uint32_t(perm[2]) << 16 |
             uint32_t(perm[3]) << 24;
    }
    set.columns = DeviceBuffer(set.host_columns.size() * 4);
    set.columns.upload(set.host_columns.data(), set.host_columns.size() * 4);
    set.vnm.columns = static_cast<const uint32_t*>(set.columns.data());
  }
  set.bytes = value_count * 2 + meta_count * 4 + set.host_columns.size() * 4;
  const int copies = copies_for(set.bytes, env);
  for (int c = 0; c < copies; ++c) {
    set.values.emplace_back(value_count * 2);
    set.meta.emplace_back(meta_count * 4);
    if (c == 0) {
      check_cuda(bench::fill_random_f16(static_cast<uint16_t*>(set.values[0].data()), value_count,
                                        seed + 1, env.stream),
                 "fill values");
      check_cuda(bench::fill_random_meta(static_cast<uint32_t*>(set.meta[0].data()), meta_count,
                                         seed + 2, env.stream),
                 "fill metadata");
    } else {
      check_cuda(cudaMemcpyAsync(set.values[c].data(), set.values[0].data(), value_count * 2,
                                 cudaMemcpyDeviceToDevice, env.stream),
                 "copy values");
      check_cuda(cudaMemcpyAsync(set.meta[c].data(), set.meta[0].data(), meta_count * 4,
                                 cudaMemcpyDeviceToDevice, env.stream),
                 "copy metadata");
    }
  }
  set.nm.values = set.vnm.values = set.values[0].data();
  set.nm.meta = set.vnm.meta = static_cast<const uint32_t*>(set.meta[0].data());
  if (pattern.kind == PatternKind::NM && nm24_wgmma_ss_supported()) {
    for (int c = 0; c < copies; ++c) {  // the shared-memory-A prefill kernel's layout
      Nm24Weights w = set.nm;
      w.values = set.values[c].data();
      set.values_k.emplace_back(nm24_values_k_bytes(w));
      check_cuda(nm24_tile_k(w, set.values_k.back().data(), env.stream), "nm24_tile_k");
    }
    check_cuda(cudaStreamSynchronize(env.stream), "nm24_tile_k");
    set.nm.values_k = set.values_k[0].data();  // so the workspace query sees the layout kernel
  }
  if (pattern.kind == PatternKind::VNM && vnm_prefill_copy_wanted(set.vnm)) {
    for (int c = 0; c < copies; ++c) {
      VnmWeights w = set.vnm;
      w.values = set.values[c].data();
      w.meta = static_cast<const uint32_t*>(set.meta[c].data());
      set.prefill_values.emplace_back(vnm_expanded_values_bytes(w));
      set.prefill_meta.emplace_back(vnm_expanded_meta_bytes(w));
      check_cuda(vnm_expand_to_nm24(w, set.prefill_values.back().data(),
                                    static_cast<uint32_t*>(set.prefill_meta.back().data()),
                                    env.stream),
                 "vnm_expand_to_nm24");
    }
    check_cuda(cudaStreamSynchronize(env.stream), "vnm_expand_to_nm24");
    set.vnm.prefill_values = set.prefill_values[0].data();  // so the workspace query sees it
    set.vnm.prefill_meta = static_cast<const uint32_t*>(set.prefill_meta[0].data());
  }
  return set;
}

// `layout_kernel`: the 2:4 prefill kernel of the opt-in second layout (nm24_prefill_wgmma_ss)
// instead of the default dispatch.
cudaError_t run_sparse(const SparseSet& set, int copy, const GemmProblem& p, cudaStream_t stream,
                       bool layout_kernel = false) {
  const size_t c = copy % set.values.size();
  if (set.is_vnm()) {
    VnmWeights w = set.vnm;
    w.values = set.values[c].data();
    w.meta = static_cast<const uint32_t*>(set.meta[c].data());
    if (!set.prefill_values.empty()) {
      w.prefill_values = set.prefill_values[c].data();
      w.prefill_meta = static_cast<const uint32_t*>(set.prefill_meta[c].data());
    }
    return vnm_gemm(w, p, stream);
  }
  Nm24Weights w = set.nm;
  w.values = set.values[c].data();
  w.meta = static_cast<const uint32_t*>(set.meta[c].data());
  if (!set.values_k.empty()) w.values_k = set.values_k[c].data();
  return layout_kernel ? nm24_prefill_wgmma_ss(w, p, stream) : nm24_gemm(w, p, stream);
}

// The timing graph of a sparse product: kGraphCalls calls over the rotated copies, call i
// writing Y slot i.
std::unique_ptr<CallGraph> sparse_graph(const SparseSet& set, const GemmProblem& p,
                                        const YRing& ring, cudaStream_t stream,
                                        bool layout_kernel = false) {
  return std::make_unique<CallGraph>(
      [&](int i) {
        GemmProblem q = p;
        q.y = ring.at(i);
        return run_sparse(set, i, q, stream, layout_kernel);
      },
      kGraphCalls, stream, layout_kernel ? "sparse gemm (layout)" : "sparse gemm");
}

// SPARSA_DECODE_TIMELINE=1: after a decode record's timings, one call alone (after a
// synchronize) and the last of three back-to-back calls (as in the timing graph, with programmatic
// dependent launch when decode_tuning().pdl) are run with the decode kernels' per-CTA %globaltimer
// stamps on (decode_tuning.h), and their spread is printed: where a small product's time goes.
bool timeline_requested() {
  const char* env = std::getenv("SPARSA_DECODE_TIMELINE");
  return env != nullptr && std::string(env) != "0";
}

std::string file_safe(std::string s) {
  for (char& c : s)
    if (c == ':' || c == '+') c = '_';
  return s;
}

// SPARSA_DECODE_TIMELINE_DIR=dir: each timeline's raw stamps too, one line per CTA (block index,
// then the kTimelineStamps values in us from the first entry), in dir/<name>-<N>x<K>-m<m>-<call>.txt.
void print_timeline(const SparseSet& set, const GemmProblem& p, cudaStream_t stream,
                    const std::string& name_prefix) {
  constexpr int kMaxCtas = 1 << 14;
  static DeviceBuffer stamps(size_t{kMaxCtas} * kTimelineStamps * 8);
  auto one = [&](const char* name, int calls) {
    check_cuda(cudaMemsetAsync(stamps.data(), 0, stamps.bytes(), stream), "zero stamps");
    check_cuda(cudaStreamSynchronize(stream), "zero stamps");
    set_decode_timeline(static_cast<unsigned long long*>(stamps.data()));
    for (int i = 0; i < calls; ++i) check_cuda(run_sparse(set, 1 + i, p, stream), "timeline call");
    set_decode_timeline(nullptr);
    check_cuda(cudaStreamSynchronize(stream), "timeline call");
    std::vector<unsigned long long> t(size_t{kMaxCtas} * kTimelineStamps);
    stamps.download(t.data(), t.size() * 8);
    int ctas = 0;
    while (ctas < kMaxCtas && t[static_cast<size_t>(ctas) * kTimelineStamps] != 0) ++ctas;
    if (ctas == 0) return;
    unsigned long long t0 = ~0ull;
    for (int c = 0; c < ctas; ++c) t0 = std::min(t0, t[static_cast<size_t>(c) * kTimelineStamps]);
    auto at = [&](int c, int k) { return (t[static_cast<size_t>(c) * kTimelineStamps + k] - t0) * 1e-3; };
    auto stat = [&](auto value) {
      std::vector<double> v(ctas);
      for (int c = 0; c < ctas; ++c) v[c] = value(c);
      std::sort(v.begin(), v.end());
      return fmt::format("{:.2f}/{:.2f}", v[ctas / 2], v.back());
    };
    fmt::print(
        "    timeline {}: {} CTAs, us from the first entry (median/max over CTAs): entry {} | "
        "wait done {} | unit 0 landed {} | last flush starts {} | exit {} ; per CTA: wait {}, "
        "unit 0 {}, units {}, flush {}\n",
        name, ctas, stat([&](int c) { return at(c, 0); }), stat([&](int c) { return at(c, 1); }),
        stat([&](int c) { return at(c, 2); }), stat([&](int c) { return at(c, 3); }),
        stat([&](int c) { return at(c, 4); }), stat([&](int c) { return at(c, 1) - at(c, 0); }),
        stat([&](int c) { return at(c, 2) - at(c, 1); }),
        stat([&](int c) { return at(c, 3) - at(c, 2); }),
        stat([&](int c) { return at(c, 4) - at(c, 3); }));
    if (const char* dir = std::getenv("SPARSA_DECODE_TIMELINE_DIR")) {
      const std::string path =
          fmt::format("{}/{}-{}.txt", dir, name_prefix, calls == 1 ? "alone" : "b2b");
      std::FILE* f = std::fopen(path.c_str(), "w");
      if (f == nullptr) fail("cannot write {}", path);
      for (int c = 0; c < ctas; ++c) {
        fmt::print(f, "{}", c);
        for (int k = 0; k < kTimelineStamps; ++k) fmt::print(f, " {:.3f}", at(c, k));
        fmt::print(f, "\n");
      }
      std::fclose(f);
    }
  };
  one("alone", 1);
  one("3rd of 3 back to back", 3);
}

size_t workspace_bytes(const SparseSet& set, int64_t m, int ctas) {
  return set.is_vnm() ? vnm_workspace_bytes(set.vnm, m, ctas)
                      : nm24_workspace_bytes(set.nm, m, ctas);
}

// Dense row `row` of copy 0, decoded on the host from the tiling (docs/formats.md).
std::vector<float> decode_row(const SparseSet& set, int64_t row, int64_t k) {
  std::vector<float> dense(k, 0.0f);
  const bool vnm = set.is_vnm();
  const int64_t rows_padded = vnm ? set.vnm.rows_padded : set.nm.rows_padded;
  const int64_t ksteps = vnm ? set.vnm.blocks_padded / 8 : set.nm.cols_padded / 32;
  const int64_t kchunks = ksteps / 8;
  const int64_t rt = row / 16, rr = row % 16, g = rr % 8, hi = rr / 8;
  std::vector<uint16_t> values(ksteps * 32 * 8);
  std::vector<uint32_t> meta(kchunks * 32 * 4);
  check_cuda(cudaMemcpy(values.data(),
                        static_cast<const uint16_t*>(set.values[0].data()) + rt * ksteps * 32 * 8,
                        values.size() * 2, cudaMemcpyDeviceToHost),
             "download values");
  check_cuda(cudaMemcpy(meta.data(),
                        static_cast<const uint32_t*>(set.meta[0].data()) + rt * kchunks * 32 * 4,
                        meta.size() * 4, cudaMemcpyDeviceToHost),
             "download metadata");
  (void)rows_padded;
  for (int64_t s = 0; s < ksteps; ++s) {
    for (int j = 0; j < 8; ++j) {
      const int sel = static_cast<int>(s % 2), half = j / 4;
      const uint32_t word = meta[((s / 8) * 32 + 4 * g + 2 * sel + half) * 4 + (s % 8) / 2];
      const uint32_t bits = hi ? word >> 16 : word & 0xffffu;
      const uint32_t nibble = (bits >> (4 * (j % 4))) & 0xf;
      for (int slot = 0; slot < 2; ++slot) {
        const int lane = static_cast<int>(4 * g + j % 4);
        const int i = slot + 2 * static_cast<int>(hi) + 4 * (j / 4);
        const float v = f32_from_f16(values[(s * 32 + lane) * 8 + i]);
        const uint32_t idx = (nibble >> (2 * slot)) & 3;
        int64_t col;
        if (vnm) {
          const int64_t block = s * 8 + j;
          const uint32_t cols = set.host_columns[(row / set.vnm.v) * set.vnm.blocks_padded + block];
          col = block * set.vnm.m + ((cols >> (8 * idx)) & 0xff);
        } else {
          col = (s * 8 + j) * 4 + idx;
        }
        if (col < k) dense[col] += v;
      }
    }
  }
  return dense;
}

// Relative Frobenius error of sampled outputs (rows x tokens) against a double product.
double check_sample(const SparseSet& set, int64_t n, int64_t k, int64_t m, const DeviceBuffer& x,
                    const DeviceBuffer& y, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> rows = {0, n - 1}, toks = {0, m - 1};
  for (int i = 0; i < 30; ++i) rows.push_back(static_cast<int64_t>(rng() % n));
  if (m <= 24) {
    toks.clear();
    for (int64_t t = 0; t < m; ++t) toks.push_back(t);
  } else {
    for (int i = 0; i < 22; ++i) toks.push_back(static_cast<int64_t>(rng() % m));
  }
  std::vector<std::vector<float>> xs;
  for (int64_t t : toks) {
    std::vector<uint16_t> bits(k);
    check_cuda(cudaMemcpy(bits.data(), static_cast<const uint16_t*>(x.data()) + t * k, k * 2,
                          cudaMemcpyDeviceToHost),
               "download x");
    std::vector<float> row(k);
    for (int64_t i = 0; i < k; ++i) row[i] = f32_from_f16(bits[i]);
    xs.push_back(std::move(row));
  }
  double diff = 0, norm = 0;
  for (int64_t r : rows) {
    const std::vector<float> w = decode_row(set, r, k);
    for (size_t ti = 0; ti < toks.size(); ++ti) {
      double ref = 0;
      for (int64_t i = 0; i < k; ++i) ref += double(xs[ti][i]) * w[i];
      uint16_t out;
      check_cuda(cudaMemcpy(&out, static_cast<const uint16_t*>(y.data()) + toks[ti] * n + r, 2,
                            cudaMemcpyDeviceToHost),
                 "download y");
      const double got = f32_from_f16(out);
      diff += (got - ref) * (got - ref);
      norm += ref * ref;
    }
  }
  return norm > 0 ? std::sqrt(diff / norm) : (diff == 0 ? 0.0 : INFINITY);
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&now));
  return buf;
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// A decode record timed again under another decode_tuning (SPARSA_BENCH_DECODE_AB).
struct VariantTime {
  std::string spec;
  double time_us, graph_time_us, rel_err;
  int64_t graph_bad;
};

struct Record {
  std::string pattern, path;
  int64_t m, n, k;
  double time_us, cublas_us;
  std::optional<double> cusparselt_us;
  double bytes, rel_err;
  std::optional<double> graph_time_us, graph_cublas_us, graph_cusparselt_us;
  std::vector<VariantTime> ab = {};
  // 2:4 prefill on sm_90a: the opt-in second-layout kernel (v8), per call and graph.
  std::optional<double> layout_time_us = {}, graph_layout_time_us = {};
};

// One summary row of a same-run A/B: pattern `pname` under variant `spec`, medians over its
// records of cuBLAS time / the variant's time, per call | graph, the default's in brackets.
void print_ab_row(const std::vector<Record>& records, const std::string& pname,
                  const std::string& spec) {
  std::vector<double> d, g, d0, g0;
  for (const Record& r : records)
    for (const VariantTime& v : r.ab)
      if (r.pattern == pname && v.spec == spec) {
        d.push_back(r.cublas_us / v.time_us);
        g.push_back(*r.graph_cublas_us / v.graph_time_us);
        d0.push_back(r.cublas_us / r.time_us);
        g0.push_back(*r.graph_cublas_us / *r.graph_time_us);
      }
  if (!d.empty())
    fmt::print("  {:>8} {:>6.2f} | {:>5.2f}   ({:.2f} | {:.2f})\n", pname, median(d), median(g),
               median(d0), median(g0));
}

// SPARSA_BENCH_DECODE_AB="tagged=0;tagged=1,shrink=0": after each decode record's own timings,
// the same record is timed (per call and graph) and checked again under each ';'-separated
// variant of decode_tuning (keys pdl, cluster, cap, shrink, tagged, fill, trim, ksplit,
// ksplit_long, ksplit32, ksplit_m16, ktail, ktail_early, ksplit_multi, ksplit32_multi,
// prologue_one, values 0/1; prologue_units=N forces N units before the wait), in the same
// process and on the same weights: same-run A/B comparisons (a variant whose plan needs
// more workspace than the default's is skipped). Keys that change the workspace layout (wide,
// two_sets) are not accepted.
std::vector<std::string> ab_specs() {
  std::vector<std::string> out;
  const char* env = std::getenv("SPARSA_BENCH_DECODE_AB");
  if (env == nullptr) return out;
  std::string all = env, cur;
  for (char c : all + ";") {
    if (c == ';') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

DecodeTuning apply_spec(DecodeTuning t, const std::string& spec) {
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(pos, end - pos);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) fail("SPARSA_BENCH_DECODE_AB: '{}' is not key=value", item);
    const std::string key = item.substr(0, eq);
    const bool on = item.substr(eq + 1) != "0";
    if (key == "prologue_units") {
      t.prologue_units = std::atoi(item.substr(eq + 1).c_str());
      pos = end + 1;
      continue;
    }
    if (key == "pdl") t.pdl = on;
    else if (key == "cluster") t.cluster = on;
    else if (key == "cap") t.cap_waves = on;
    else if (key == "shrink") t.cluster_shrink = on;
    else if (key == "tagged") t.tagged_fixup = on;
    else if (key == "fill") t.fill = on;
    else if (key == "trim") t.trim = on;
    else if (key == "ksplit") t.ksplit = on;
    else if (key == "ksplit_long") t.ksplit_long = on;
    else if (key == "ksplit32") t.ksplit32 = on;
    else if (key == "ksplit_m16") t.ksplit_m16 = on;
    else if (key == "ktail") t.ktail = on;
    else if (key == "ktail_early") t.ktail_early = on;
    else if (key == "ksplit_multi") t.ksplit_multi = on;
    else if (key == "prologue_one") t.prologue_one = on;
    else if (key == "ksplit32_multi") t.ksplit32_multi = on;
    else fail("SPARSA_BENCH_DECODE_AB: unknown key '{}' in '{}'", key, spec);
    pos = end + 1;
  }
  return t;
}

// Poisons every Y slot, replays the graph once and compares each slot bit for bit with `want`
// (the direct call's output; all weight copies hold the same values). Returns the number of
// differing fp16 outputs.
int64_t check_graph(CallGraph& graph, const YRing& ring, const std::vector<uint16_t>& want,
                    cudaStream_t stream) {
  const size_t bytes = want.size() * 2;
  for (const DeviceBuffer& s : ring.slots)
    check_cuda(cudaMemsetAsync(s.data(), 0xff, bytes, stream), "poison graph outputs");
  graph.replay();
  check_cuda(cudaStreamSynchronize(stream), "graph replay");
  int64_t bad = 0;
  std::vector<uint16_t> got(want.size());
  for (const DeviceBuffer& s : ring.slots) {
    check_cuda(cudaMemcpy(got.data(), s.data(), bytes, cudaMemcpyDeviceToHost), "download y");
    for (size_t i = 0; i < got.size(); ++i) bad += got[i] != want[i];
  }
  return bad;
}

// One sparse product checked and timed: a direct call on weight copy 0 into a poisoned Y, its
// sampled outputs against the double CPU product; the per-call median over the rotated copies;
// the timing graph, every output of one replay bit for bit against the direct call.
struct Checked {
  double us, graph_us, err;
  int64_t graph_bad;
  std::vector<uint16_t> direct;  // the direct call's Y
  bool ok() const { return err <= kMaxError && graph_bad == 0; }
};
Checked time_checked(const SparseSet& set, const GemmProblem& p, int64_t n, int64_t k,
                     const DeviceBuffer& x, const DeviceBuffer& y, uint64_t seed, const Env& env,
                     bool layout_kernel = false) {
  const int64_t m = p.m;
  Checked c;
  check_cuda(cudaMemsetAsync(y.data(), 0xff, m * n * 2, env.stream), "poison y");
  check_cuda(run_sparse(set, 0, p, env.stream, layout_kernel), "sparse gemm");
  check_cuda(cudaStreamSynchronize(env.stream), "sparse gemm");
  c.err = check_sample(set, n, k, m, x, y, seed);
  c.direct.resize(m * n);
  check_cuda(cudaMemcpy(c.direct.data(), y.data(), m * n * 2, cudaMemcpyDeviceToHost),
             "download y");
  c.us = median_us([&](int i) { return run_sparse(set, i, p, env.stream, layout_kernel); },
                   env.warmup, env.repeats, env.stream,
                   layout_kernel ? "sparse gemm (layout)" : "sparse gemm", warm_ms(env, m));
  const YRing ring(m, n);
  const auto graph = sparse_graph(set, p, ring, env.stream, layout_kernel);
  c.graph_us = graph->median_us_per_call(2, env.repeats, warm_ms(env, m));
  c.graph_bad = check_graph(*graph, ring, c.direct, env.stream);
  return c;
}

}  // namespace

int run_gemm_bench(const GemmBenchOptions& options) {
  Env env;
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    fmt::print(stderr, "sparsa bench gemm: no CUDA device\n");
    return 2;
  }
  check_cuda(cudaGetDeviceProperties(&env.props, 0), "cudaGetDeviceProperties");
  check_cuda(cudaStreamCreate(&env.stream), "cudaStreamCreate");
  check_cublas(cublasCreate(&env.cublas), "cublasCreate");
  check_cublas(cublasSetStream(env.cublas, env.stream), "cublasSetStream");
  env.cublas_workspace = DeviceBuffer(kCublasWorkspace);
  check_cublas(cublasSetWorkspace(env.cublas, env.cublas_workspace.data(), kCublasWorkspace),
               "cublasSetWorkspace");

  std::vector<std::pair<int64_t, int64_t>> shapes = options.shapes;
  if (shapes.empty()) {
    shapes = {{4096, 4096},  {11008, 4096}, {4096, 11008}, {14336, 4096},
              {4096, 14336}, {28672, 8192}, {8192, 28672}};
    if (options.quick) shapes = {{4096, 4096}, {14336, 4096}, {4096, 14336}};
  }
  std::vector<int64_t> ms = options.ms;
  if (ms.empty())
    ms = options.quick ? std::vector<int64_t>{1, 16, 2048}
                       : std::vector<int64_t>{1, 16, 64, 256, 2048, 8192};
  std::vector<std::string> pattern_names = options.patterns;
  if (pattern_names.empty()) pattern_names = {"2:4", "64:2:5", "64:2:8", "128:2:16"};
  std::vector<Pattern> patterns;
  std::vector<std::string> compressed, summary_names;  // "PATTERN+CODEC": bench_compressed.h
  for (const auto& name : pattern_names) {
    if (bench::is_compressed_pattern(name)) {
      compressed.push_back(bench::compressed_pattern_name(name));
      continue;
    }
    const Pattern p = Pattern::parse(name);
    if (!(p.kind == PatternKind::NM && p.n == 2 && p.m == 4) &&
        !(p.kind == PatternKind::VNM && p.n == 2))
      fail("bench gemm: pattern '{}': the GPU kernels run 2:4 and V:2:M", name);
    patterns.push_back(p);
  }
  env.repeats = options.repeats > 0 ? options.repeats : (options.quick ? 10 : 30);
  if (!(options.prefill_warm_ms >= 0)) {
    fmt::print(stderr, "sparsa bench gemm: --warm-ms {} must be >= 0\n", options.prefill_warm_ms);
    return 2;
  }
  env.prefill_warm_ms = options.prefill_warm_ms;
  const int64_t max_m = *std::max_element(ms.begin(), ms.end());

  fmt::print("device: {} ({} SMs, {} MB L2)\n", env.props.name, env.props.multiProcessorCount,
             env.props.l2CacheSize >> 20);
  if (nm24_wgmma_ssc_supported())
    fmt::print("v12 prefill: {} clusters of 2 CTAs resident at once\n",
               nm24_prefill_ssc_resident_clusters(2));
  const double copy_tbps = measure_copy_tbps(env);
  const double dense_tflops = measure_dense_tflops(env);
  fmt::print(
      "device-to-device copy: {:.2f} TB/s (read + write); cuBLAS fp16 8192^3: {:.0f} TFLOP/s\n",
      copy_tbps, dense_tflops);
#ifdef SPARSA_HAVE_CUSPARSELT
  fmt::print("cuSPARSELt {}\n", bench::CusparseltGemm::version());
#else
  fmt::print("cuSPARSELt: not built (cusparselt_us left out)\n");
#endif

  std::vector<Record> records;
  bool all_ok = true;
  uint64_t seed = 1000;
  for (const auto& [n, k] : shapes) {
    fmt::print("\n== N={} K={}\n", n, k);
    DeviceBuffer x(max_m * k * 2), y(max_m * n * 2);
    check_cuda(
        bench::fill_random_f16(static_cast<uint16_t*>(x.data()), max_m * k, ++seed, env.stream),
        "fill x");
    // Dense weights for cuBLAS (and the source cuSPARSELt prunes), rotated.
    std::vector<DeviceBuffer> dense;
    const int dense_copies = copies_for(n * k * 2, env);
    for (int c = 0; c < dense_copies; ++c) {
      dense.emplace_back(n * k * 2);
      check_cuda(bench::fill_random_f16(static_cast<uint16_t*>(dense.back().data()), n * k, ++seed,
                                        env.stream),
                 "fill dense");
    }
    std::vector<double> cublas_us(ms.size()), cslt_us(ms.size(), NAN);
    std::vector<double> g_cublas_us(ms.size()), g_cslt_us(ms.size(), NAN);
    for (size_t mi = 0; mi < ms.size(); ++mi) {
      const int64_t m = ms[mi];
      cublas_us[mi] = median_us(
          [&](int i) {
            return cublas_gemm(env, dense[i % dense_copies].data(), x.data(), y.data(), n, k, m);
          },
          env.warmup, env.repeats, env.stream, "cuBLAS", warm_ms(env, m));
      {
        const YRing ring(m, n);
        CallGraph graph(
            [&](int i) {
              return cublas_gemm(env, dense[i % dense_copies].data(), x.data(), ring.at(i), n, k,
                                 m);
            },
            kGraphCalls, env.stream, "cuBLAS");
        g_cublas_us[mi] = graph.median_us_per_call(2, env.repeats, warm_ms(env, m));
      }
#ifdef SPARSA_HAVE_CUSPARSELT
      const bool want_24 = std::any_of(patterns.begin(), patterns.end(),
                                       [](const Pattern& p) { return p.kind == PatternKind::NM; });
      if (want_24) {
        try {
          std::vector<const void*> ptrs;
          for (auto& d : dense) ptrs.push_back(d.data());
          bench::CusparseltGemm lt(n, k, m, ptrs, x.data(), y.data(), env.stream);
          cslt_us[mi] =
              median_us([&](int i) { return lt.run(i); }, env.warmup, env.repeats, env.stream,
                        "cuSPARSELt", warm_ms(env, m));
          // Every call of the graph writes lt's one Y (its plan binds the pointers).
          try {
            CallGraph graph([&](int i) { return lt.run(i); }, kGraphCalls, env.stream,
                            "cuSPARSELt");
            g_cslt_us[mi] = graph.median_us_per_call(2, env.repeats, warm_ms(env, m));
          } catch (const Error& e) {
            fmt::print("  cuSPARSELt m={}: no graph timing: {}\n", m, e.what());
          }
        } catch (const Error& e) {
          fmt::print("  cuSPARSELt m={}: {}\n", m, e.what());
        }
      }
#endif
    }
    for (const Pattern& pattern : patterns) {
      const SparseSet set = make_sparse_set(pattern, n, k, env, ++seed);
      const std::string pname = pattern.to_string();
      size_t ws_bytes = 0;
      const int sms = env.props.multiProcessorCount;
      for (int64_t m : ms) {
        if (m <= kDecodeMaxM)
          for (int c : {0, sms, 2 * sms, 3 * sms, 4 * sms})
            ws_bytes = std::max(ws_bytes, workspace_bytes(set, m, c));
        else  // the wgmma prefill's split-K partials (2:4 v10, V:2:M session 8)
          ws_bytes = std::max(ws_bytes, workspace_bytes(set, m, 0));
      }
      DeviceBuffer ws(std::max<size_t>(ws_bytes, 16));
      check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
      for (size_t mi = 0; mi < ms.size(); ++mi) {
        const int64_t m = ms[mi];
        GemmProblem p;
        p.x = x.data();
        p.m = m;
        p.ldx = k;
        p.y = y.data();
        p.ldy = n;
        p.y_type = ElemType::F16;
        p.workspace = ws.data();
        p.workspace_bytes = ws.bytes();
        if (k % 8 != 0) fail("bench gemm: K = {} must be a multiple of 8", k);
        // Correctness first (copy 0), then timing over the rotated copies.
        const unsigned long long clusters_before = decode_cluster_launches();
        const unsigned long long ktail_before = decode_ktail_launches();
        const Checked own = time_checked(set, p, n, k, x, y, ++seed, env);
        const bool clusters = decode_cluster_launches() != clusters_before;
        const bool ktail = decode_ktail_launches() != ktail_before;
        const double us = own.us, graph_us = own.graph_us, err = own.err;
        const int64_t graph_bad = own.graph_bad;
        const double bytes = static_cast<double>(set.bytes) + m * k * 2.0 + m * n * 2.0;
        const std::string path = m <= kDecodeMaxM ? "decode" : "prefill";
        const bool lt = !std::isnan(cslt_us[mi]) && pattern.kind == PatternKind::NM;
        const bool lt_graph = lt && !std::isnan(g_cslt_us[mi]);
        records.push_back({pname, path, m, n, k, us, cublas_us[mi],
                           lt ? std::optional<double>(cslt_us[mi]) : std::nullopt, bytes, err,
                           graph_us, g_cublas_us[mi],
                           lt_graph ? std::optional<double>(g_cslt_us[mi]) : std::nullopt});
        all_ok = all_ok && own.ok();
        fmt::print("  {:>8} m={:<5} {:>7} {:>8.1f} us cuBLAS {:>8.1f} us x{:<5.2f}", pname, m, path,
                   us, cublas_us[mi], cublas_us[mi] / us);
        fmt::print(" | graph {:>8.1f} us cuBLAS {:>8.1f} us x{:<5.2f}", graph_us, g_cublas_us[mi],
                   g_cublas_us[mi] / graph_us);
        if (lt) {
          fmt::print(" | cuSPARSELt {:>7.1f} us (x{:.2f})", cslt_us[mi],
                     cublas_us[mi] / cslt_us[mi]);
          if (lt_graph)
            fmt::print(" graph {:>7.1f} us (x{:.2f})", g_cslt_us[mi],
                       g_cublas_us[mi] / g_cslt_us[mi]);
        }
        if (clusters) fmt::print(" | clusters");
        if (ktail) fmt::print(" | ktail");
        fmt::print(" | {:.2f} TB/s err {:.1e}{}{}\n", bytes / (us * 1e-6) / 1e12, err,
                   err <= kMaxError ? "" : "  FAIL",
                   graph_bad == 0 ? ""
                                  : fmt::format("  FAIL: graph replay differs from a direct call "
                                                "in {} outputs",
                                                graph_bad));
        if (m >= kWgmmaMinM && !set.values_k.empty()) {
          // The opt-in second-layout kernel on the same weights, checked the same way.
          const Checked l = time_checked(set, p, n, k, x, y, ++seed, env, true);
          records.back().layout_time_us = l.us;
          records.back().graph_layout_time_us = l.graph_us;
          all_ok = all_ok && l.ok();
          std::string kernel = "v8";
          if (nm24_prefill_ssc_mode().on) {  // v12: and its streamed tail, where it has one
            const Nm24SscTailPlan tail = nm24_prefill_ssc_tail_plan(set.nm, m);
            kernel = tail.shares > 0 ? fmt::format("v12, tail of {} tiles in {} shares of {} chunks",
                                                   tail.tail_tiles, tail.shares, tail.share_chunks)
                                     : "v12";
          }
          fmt::print("    + values_k (opt-in layout, {}) {:>8.1f} us x{:<5.2f} | graph {:>8.1f} us x{:<5.2f}"
                     " | err {:.1e}{}{}\n",
                     kernel, l.us, cublas_us[mi] / l.us, l.graph_us, g_cublas_us[mi] / l.graph_us, l.err,
                     l.err <= kMaxError ? "" : "  FAIL",
                     l.graph_bad == 0 ? "" : fmt::format("  FAIL: graph replay differs in {}", l.graph_bad));
        }
        if (m <= kDecodeMaxM && timeline_requested())
          print_timeline(set, p, env.stream,
                         fmt::format("{}-{}x{}-m{}", file_safe(pname), n, k, m));
        if (m <= kDecodeMaxM)
          for (const std::string& spec : ab_specs()) {
            const DecodeTuning base = decode_tuning();
            set_decode_tuning(apply_spec(base, spec));
            if (workspace_bytes(set, m, 0) > ws.bytes()) {
              set_decode_tuning(base);
              fmt::print("    A/B {}: skipped (needs a larger workspace)\n", spec);
              continue;
            }
            const unsigned long long v_clusters_before = decode_cluster_launches();
            const unsigned long long v_ktail_before = decode_ktail_launches();
            const Checked v = time_checked(set, p, n, k, x, y, ++seed, env);
            const bool v_clusters = decode_cluster_launches() != v_clusters_before;
            const bool v_ktail = decode_ktail_launches() != v_ktail_before;
            set_decode_tuning(base);
            const bool same = v.direct == own.direct;
            const double v_us = v.us, v_graph = v.graph_us, v_err = v.err;
            const int64_t v_bad = v.graph_bad;
            records.back().ab.push_back({spec, v_us, v_graph, v_err, v_bad});
            all_ok = all_ok && v.ok();
            fmt::print("    A/B {:<22} {:>8.1f} us x{:<5.2f} | graph {:>8.1f} us x{:<5.2f} | err {:.1e}{}{}{}{}{}\n",
                       spec, v_us, cublas_us[mi] / v_us, v_graph, g_cublas_us[mi] / v_graph, v_err,
                       same ? " | same bits" : " | other bits", v_clusters ? " | clusters" : "",
                       v_ktail ? " | ktail" : "",
                       v_err <= kMaxError ? "" : "  FAIL",
                       v_bad == 0 ? "" : fmt::format("  FAIL: graph replay differs in {}", v_bad));
          }
        if (options.sweep_ctas && m <= kDecodeMaxM) {
          // Tuning: per call and graph times at several CTA counts, and the graph with
          // programmatic dependent launch switched the other way (decode_tuning.h).
          const YRing ring(m, n);
          auto graph_time = [&](const GemmProblem& q) {
            return sparse_graph(set, q, ring, env.stream)->median_us_per_call(2, env.repeats);
          };
          fmt::print("    CTAs (per call / graph):");
          for (int s : {sms, 2 * sms, 3 * sms, 4 * sms}) {
            GemmProblem q = p;
            q.ctas = s;
            const double t = median_us([&](int i) { return run_sparse(set, i, q, env.stream); },
                                       env.warmup, env.repeats, env.stream);
            fmt::print(" {}:{:.1f}/{:.1f}", s, t, graph_time(q));
          }
          const DecodeTuning tuning = decode_tuning();
          DecodeTuning flip = tuning;
          flip.pdl = !tuning.pdl;
          set_decode_tuning(flip);
          const double flipped = graph_time(p);
          set_decode_tuning(tuning);
          fmt::print("\n    graph with PDL {}: {:.1f} us (PDL {}: {:.1f})\n",
                     tuning.pdl ? "off" : "on", flipped, tuning.pdl ? "on" : "off", graph_us);
        }
      }
    }
    for (const std::string& cname : compressed) {
      for (const auto& t : bench::time_compressed(cname, n, k, ms, x.data(), y.data(), env.stream,
                                                  env.warmup, env.repeats, env.props.l2CacheSize,
                                                  ++seed, options.sweep_ctas, env.prefill_warm_ms)) {
        const size_t mi = std::find(ms.begin(), ms.end(), t.m) - ms.begin();
        const double cb = cublas_us[mi], gcb = g_cublas_us[mi];
        // Compressed kernels (bench_compressed.h): per call and graph (session 7), each graph
        // replay checked against a direct call; "pdl=0" and SPARSA_COMPRESSED_AB variants as A/B.
        const char* path = t.prefill ? "prefill" : "decode";
        records.push_back({cname, path, t.m, n, k, t.time_us, cb, std::nullopt, t.bytes,
                           t.rel_err, t.graph_time_us, gcb, std::nullopt});
        for (const auto& v : t.ab)
          records.back().ab.push_back({v.spec, v.time_us, v.graph_time_us, v.rel_err, v.graph_bad});
        all_ok = all_ok && t.rel_err <= kMaxError && t.graph_bad == 0;
        fmt::print("  {:>8} m={:<5} {:>7} {:>9.1f} us  cuBLAS {:>9.1f} us  x{:<5.2f}  {:.2f} TB/s"
                   " | graph {:>8.1f} us cuBLAS {:>8.1f} us x{:<5.2f}  err {:.1e}{}{}\n",
                   cname, t.m, path, t.time_us, cb, cb / t.time_us, t.bytes / (t.time_us * 1e-6) / 1e12,
                   t.graph_time_us, gcb, gcb / t.graph_time_us, t.rel_err,
                   t.rel_err <= kMaxError ? "" : "  FAIL",
                   t.graph_bad == 0 ? ""
                                    : fmt::format("  FAIL: graph replay differs from a direct call "
                                                  "in {} outputs",
                                                  t.graph_bad));
        for (const auto& v : t.ab) {
          all_ok = all_ok && v.rel_err <= kMaxError && v.graph_bad == 0;
          fmt::print(
              "    A/B {:<22} {:>8.1f} us x{:<5.2f} | graph {:>8.1f} us x{:<5.2f} | err {:.1e}{}{}{}\n",
              v.spec, v.time_us, cb / v.time_us, v.graph_time_us, gcb / v.graph_time_us, v.rel_err,
              v.same_bits ? " | same bits" : " | other bits", v.rel_err <= kMaxError ? "" : "  FAIL",
              v.graph_bad == 0 ? ""
                               : fmt::format("  FAIL: graph replay differs in {}", v.graph_bad));
        }
      }
    }
  }

  // Summary against the targets: medians over shapes of the speed-up over cuBLAS.
  fmt::print(
      "\nsummary (median over shapes of cuBLAS time / kernel time; per call | graph of {} calls)\n",
      kGraphCalls);
  fmt::print("  {:>8} {:>14} {:>14} {:>16} {:>16} | {:>14} {:>14} {:>16}\n", "pattern",
             "decode m<=16", "prefill m>=2048", "decode TB/s/copy", "cuSPARSELt m>=2048",
             "graph decode", "graph prefill", "graph cuSPARSELt");
  for (const Pattern& pattern : patterns) summary_names.push_back(pattern.to_string());
  summary_names.insert(summary_names.end(), compressed.begin(), compressed.end());
  for (const std::string& pname : summary_names) {
    std::vector<double> dec, pre, bw, lt, gdec, gpre, glt;
    for (const Record& r : records) {
      if (r.pattern != pname) continue;
      if (r.m <= 16) {
        dec.push_back(r.cublas_us / r.time_us);
        bw.push_back(r.bytes / (r.time_us * 1e-6) / 1e12 / copy_tbps);
        if (r.graph_time_us) gdec.push_back(*r.graph_cublas_us / *r.graph_time_us);
      }
      if (r.m >= 2048) {
        pre.push_back(r.cublas_us / r.time_us);
        if (r.cusparselt_us) lt.push_back(r.cublas_us / *r.cusparselt_us);
        if (r.graph_time_us) gpre.push_back(*r.graph_cublas_us / *r.graph_time_us);
        if (r.graph_cusparselt_us) glt.push_back(*r.graph_cublas_us / *r.graph_cusparselt_us);
      }
    }
    fmt::print("  {:>8} {:>14.2f} {:>14.2f} {:>16.2f} {:>16.2f} | {:>14.2f} {:>14.2f} {:>16.2f}\n",
               pname, median(dec), median(pre), median(bw), median(lt), median(gdec),
               median(gpre), median(glt));
  }

  {
    std::vector<double> pre, gpre;
    for (const Record& r : records)
      if (r.m >= 2048 && r.layout_time_us) {
        pre.push_back(r.cublas_us / *r.layout_time_us);
        gpre.push_back(*r.graph_cublas_us / *r.graph_layout_time_us);
      }
    if (!pre.empty())
      fmt::print("  {:>8} {:>14} {:>14.2f} {:>16} {:>16} | {:>14} {:>14.2f}   (opt-in "
                 "SPARSA_PREFILL24=ss: a second copy of the values)\n",
                 "2:4+vk", "", median(pre), "", "", "", median(gpre));
  }

  for (const std::string& spec : ab_specs()) {
    fmt::print("  A/B {} (decode m<=16, per call | graph; default in brackets):\n", spec);
    for (const std::string& pname : summary_names) {
      print_ab_row(records, pname, spec);
    }
  }

  {  // compressed records' same-run A/B ("pdl=0", "variant=N"; bench_compressed.h)
    std::vector<std::string> specs;
    for (const Record& r : records)
      if (bench::is_compressed_pattern(r.pattern))
        for (const VariantTime& v : r.ab)
          if (std::find(specs.begin(), specs.end(), v.spec) == specs.end()) specs.push_back(v.spec);
    for (const std::string& spec : specs) {
      fmt::print("  compressed A/B {} (decode m<=16, median x cuBLAS per call | graph; default in "
                 "brackets):\n",
                 spec);
      for (const std::string& pname : compressed) {
        print_ab_row(records, pname, spec);
      }
    }
  }

  if (!options.out.empty()) {
    ordered_json j;
    j["device"] = env.props.name;
    j["date"] = today();
    j["copy_TBps"] = copy_tbps;
    j["dense_TFLOPs"] = dense_tflops;
#ifdef SPARSA_HAVE_CUSPARSELT
    j["cusparselt_version"] = bench::CusparseltGemm::version();
#endif
    j["method"] =
        "fp16 in, fp32 accumulate, fp16 out; median of per-launch CUDA-event times after warm-up; "
        "weight copies rotated (total >= 4x L2); rel_err: sampled outputs vs double CPU product";
    j["decode_tuning"] = {{"pdl", decode_tuning().pdl},
                          {"wide_gather", decode_tuning().wide_gather},
                          {"two_sets", decode_tuning().two_sets},
                          {"cluster", decode_tuning().cluster},
                          {"cap_waves", decode_tuning().cap_waves},
                          {"cluster_shrink", decode_tuning().cluster_shrink},
                          {"tagged_fixup", decode_tuning().tagged_fixup},
                          {"fill", decode_tuning().fill},
                          {"trim", decode_tuning().trim},
                          {"ksplit", decode_tuning().ksplit},
                          {"ksplit_long", decode_tuning().ksplit_long},
                          {"ksplit32", decode_tuning().ksplit32},
                          {"ksplit_m16", decode_tuning().ksplit_m16},
                          {"ktail", decode_tuning().ktail},
                          {"ktail_early", decode_tuning().ktail_early},
                          {"ksplit_multi", decode_tuning().ksplit_multi},
                          {"prologue_one", decode_tuning().prologue_one},
                          {"prologue_units", decode_tuning().prologue_units},
                          {"ksplit32_multi", decode_tuning().ksplit32_multi},
                          {"cluster_launches", decode_cluster_launches()},
                          {"ktail_launches", decode_ktail_launches()}};
    j["timing"] = {
        {"per_call",
         "time_us, cublas_us, cusparselt_us: each call between its own pair of CUDA events, "
         "median over the timed calls after a warm-up; every call pays a lone kernel's launch "
         "and ramp-up"},
        {"graph",
         fmt::format("graph_time_us, graph_cublas_us, graph_cusparselt_us: {} consecutive calls "
                     "over the rotated weight copies captured into one CUDA graph (each call "
                     "writing its own Y where {} MiB allow, cuSPARSELt one Y), CUDA events "
                     "around each replay, median over {} replays after 2, divided by {}; every "
                     "output of a replay checked bit for bit against a direct call; cuBLAS with "
                     "a {} MiB workspace set by cublasSetWorkspace; sparse decode kernels launched as "
                     "decode_tuning says (with programmatic dependent launch when pdl is true, "
                     "so a kernel's prologue overlaps the previous call's tail), and so the 2:4 / "
                     "V:2:M compressed decode kernels since session 7 (bitmap: no PDL)",
                     kGraphCalls, kGraphYBytes >> 20, env.repeats, kGraphCalls,
                     kCublasWorkspace >> 20)},
        {"graph_calls", kGraphCalls},
        {"prefill_warm_ms", env.prefill_warm_ms},
        {"prefill_warm",
         "at m > 16 every kernel (ours, cuBLAS, cuSPARSELt, the layout kernel) first runs back to "
         "back for prefill_warm_ms (its calls, or its graph replays for the graph timing) and is "
         "timed right after, without an idle gap, so all are timed at the sustained, power-capped "
         "clock (session 14; before, per-call prefill times of ours followed an idle gap at ~1.95 "
         "GHz while cuSPARSELt's followed its algorithm search); 0: no such warm-up"},
        {"prefill_layout",
         "prefill_layout_us, graph_prefill_layout_us: 2:4 at m >= 64 on sm_90a, the opt-in "
         "shared-memory-A kernel (nm24_prefill_wgmma_ss; SPARSA_PREFILL24=ss, a second copy of the "
         "values in device memory) on the same weights, timed and checked the same two ways; "
         "time_us is the default dispatch"}};
    ordered_json recs = ordered_json::array();
    for (const Record& r : records) {
      ordered_json o;
      o["pattern"] = r.pattern;
      o["M"] = r.m;
      o["N"] = r.n;
      o["K"] = r.k;
      o["path"] = r.path;
      o["time_us"] = r.time_us;
      o["cublas_us"] = r.cublas_us;
      if (r.cusparselt_us) o["cusparselt_us"] = *r.cusparselt_us;
      if (r.graph_time_us) o["graph_time_us"] = *r.graph_time_us;
      if (r.graph_cublas_us) o["graph_cublas_us"] = *r.graph_cublas_us;
      if (r.graph_cusparselt_us) o["graph_cusparselt_us"] = *r.graph_cusparselt_us;
      if (r.layout_time_us) o["prefill_layout_us"] = *r.layout_time_us;
      if (r.graph_layout_time_us) o["graph_prefill_layout_us"] = *r.graph_layout_time_us;
      o["bytes"] = r.bytes;
      o["TBps"] = r.bytes / (r.time_us * 1e-6) / 1e12;
      o["rel_err"] = r.rel_err;
      if (!r.ab.empty()) {
        ordered_json ab = ordered_json::object();
        for (const VariantTime& v : r.ab)
          ab[v.spec] = {{"time_us", v.time_us},
                        {"graph_time_us", v.graph_time_us},
                        {"rel_err", v.rel_err},
                        {"graph_bad", v.graph_bad}};
        o["ab"] = ab;
      }
      recs.push_back(o);
    }
    j["records"] = recs;
    std::ofstream out(options.out);
    if (!out) fail("bench gemm: cannot write '{}'", options.out);
    out << j.dump(1) << "\n";
    fmt::print("wrote {}\n", options.out);
  }
  cublasDestroy(env.cublas);
  cudaStreamDestroy(env.stream);
  if (!all_ok) {
    fmt::print(stderr, "bench gemm: some outputs exceed the error bound {}\n", kMaxError);
    return 1;
  }
  return 0;
}

}  // namespace sparsa::cuda
