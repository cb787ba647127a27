// cpu_gemm: every packed format's SIMD GEMM against the dense SIMD kernel and OpenBLAS at the
// same shape, Y[M, N] = X[M, K] * W[N, K]^T, for M = 1 (decode), 16 and 256 (prefill).
//
//   cpu_gemm [--quick] [--hot] [--out=FILE] [google-benchmark flags]
//
// --quick: 1024 x 1024, M = 1 and 16, 3 repetitions (a smoke run of a few seconds).
// --hot: no rotation, the weights stay in cache: the kernels' compute cost alone.
// --reps=N: repetitions per benchmark (default 11, --quick 3).
//
// Weights are random with no zeros except the pruned ones. Every benchmark cycles through
// enough copies of its packed matrix (>= 96 MiB in all) that the weights come from DRAM, not
// from the 32 MiB L3, as they would in a model whose layers do not fit in cache. Times are
// wall-clock (UseRealTime), medians of several repetitions. At the end a plain table is printed
// and JSON is written (--out, default bench/results/cpu-gemm-<host>-<date>.json) with the
// device, the date and one record per (format, M, shape) holding the dense SIMD and OpenBLAS
// times measured in the same run.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "hwy/targets.h"
#include "sparsa/format.h"
#include "sparsa/kernels.h"
#include "sparsa/pattern.h"
#include "sparsa/tensor.h"

#ifdef SPARSA_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace sparsa::bench {
namespace {

// ---- what is measured
// ----------------------------------------------------------------------------
enum class Kind { Packed, OpenBlas };

struct Config {
  std::string format;   // "dense", "csr", ..., or "openblas"
  std::string pattern;  // human label: "dense", "90%", "2:8", "64:2:8", "4x4 90%"
  DType dtype = DType::F32;
  Kind kind = Kind::Packed;
  FormatKind format_kind = FormatKind::Dense;
  Pattern pack_pattern;
  double density = 1.0;  // csr/bitmap/bsr masks
};

Pattern pattern_of(PatternKind kind, int n = 0, int m = 0, int v = 0, int bh = 0, int bw = 0,
                   double sparsity = 0.0) {
  Pattern p;
  p.kind = kind;
  p.n = n;
  p.m = m;
  p.v = v;
  p.block_rows = bh;
  p.block_cols = bw;
  p.sparsity = sparsity;
  return p;
}

std::vector<Config> all_configs() {
  const Pattern dense = pattern_of(PatternKind::Dense);
  std::vector<Config> configs = {
      {"dense", "dense", DType::F32, Kind::Packed, FormatKind::Dense, dense},
      {"openblas", "dense", DType::F32, Kind::OpenBlas, FormatKind::Dense, dense},
      {"dense", "dense", DType::F16, Kind::Packed, FormatKind::Dense, dense},
      {"dense", "dense", DType::BF16, Kind::Packed, FormatKind::Dense, dense},
      {"csr", "90%", DType::F32, Kind::Packed, FormatKind::CSR,
       pattern_of(PatternKind::Unstructured, 0, 0, 0, 0, 0, 0.9), 0.1},
      {"csr", "50%", DType::F32, Kind::Packed, FormatKind::CSR,
       pattern_of(PatternKind::Unstructured, 0, 0, 0, 0, 0, 0.5), 0.5},
      {"bitmap", "90%", DType::F32, Kind::Packed, FormatKind::Bitmap,
       pattern_of(PatternKind::Unstructured, 0, 0, 0, 0, 0, 0.9), 0.1},
      {"bitmap", "50%", DType::F32, Kind::Packed, FormatKind::Bitmap,
       pattern_of(PatternKind::Unstructured, 0, 0, 0, 0, 0, 0.5), 0.5},
      {"nm", "2:4", DType::F32, Kind::Packed, FormatKind::NM, pattern_of(PatternKind::NM, 2, 4)},
      {"nm", "2:8", DType::F32, Kind::Packed, FormatKind::NM, pattern_of(PatternKind::NM, 2, 8)},
      {"vnm", "64:2:8", DType::F32, Kind::Packed, FormatKind::VNM,
       pattern_of(PatternKind::VNM, 2, 8, 64)},
      {"bsr", "4x4 90%", DType::F32, Kind::Packed, FormatKind::BSR,
       pattern_of(PatternKind::Block, 0, 0, 0, 4, 4, 0.9), 0.1},
  };
#ifndef SPARSA_HAVE_OPENBLAS
  std::erase_if(configs, [](const Config& c) { return c.kind == Kind::OpenBlas; });
#endif
  return configs;
}

std::string dtype_label(DType dtype) {
  return dtype == DType::F32 ? "f32" : dtype == DType::F16 ? "f16" : "bf16";
}

// ---- random pruned weights
// ------------------------------------------------------------------------ Uniform in [-1, 1]
// without exact zeros, then the pattern's mask applied.
std::vector<float> random_weights(const Config& c, int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> w(rows * cols);
  for (float& v : w) {
    do v = uniform(rng);
    while (v == 0.0f);
  }
  std::vector<uint8_t> keep(w.size(), 0);
  std::bernoulli_distribution coin(c.density);
  auto pick = [&](int64_t range, int64_t count) {  // `count` distinct offsets from [0, range)
    std::vector<int64_t> all(range);
    std::iota(all.begin(), all.end(), 0);
    for (int64_t i = 0; i < std::min(count, range); ++i)
      std::swap(all[i], all[i + std::uniform_int_distribution<int64_t>(0, range - 1 - i)(rng)]);
    all.resize(std::min(count, range));
    return all;
  };
  switch (c.format_kind) {
    case FormatKind::Dense:
      std::fill(keep.begin(), keep.end(), 1);
      break;
    case FormatKind::CSR:
    case FormatKind::Bitmap:
      for (auto& k : keep) k = coin(rng);
      break;
    case FormatKind::NM: {
      const int n = c.pack_pattern.n, m = c.pack_pattern.m;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < cols; g += m)
          for (int64_t j : pick(std::min<int64_t>(m, cols - g), n)) keep[r * cols + g + j] = 1;
      break;
    }
    case FormatKind::VNM: {
      const int v = c.pack_pattern.v, m = c.pack_pattern.m;
      for (int64_t r0 = 0; r0 < rows; r0 += v)
        for (int64_t c0 = 0; c0 < cols; c0 += m) {
          const auto four = pick(std::min<int64_t>(m, cols - c0), 4);
          for (int64_t r = r0; r < std::min(rows, r0 + v); ++r)
            for (int64_t j : pick(static_cast<int64_t>(four.size()), 2))
              keep[r * cols + c0 + four[j]] = 1;
        }
      break;
    }
    case FormatKind::BSR: {
      const int bh = c.pack_pattern.block_rows, bw = c.pack_pattern.block_cols;
      for (int64_t r0 = 0; r0 < rows; r0 += bh)
        for (int64_t c0 = 0; c0 < cols; c0 += bw) {
          if (!coin(rng)) continue;
          for (int64_t r = r0; r < std::min<int64_t>(rows, r0 + bh); ++r)
            for (int64_t cc = c0; cc < std::min<int64_t>(cols, c0 + bw); ++cc)
              keep[r * cols + cc] = 1;
        }
      break;
    }
  }
  for (size_t i = 0; i < w.size(); ++i)
    if (!keep[i]) w[i] = 0.0f;
  return w;
}

// ---- the matrices, built on first use and kept for the whole run
// ---------------------------------- Repetitions of all benchmarks are interleaved in random order
// (DRAM bandwidth on a shared host drifts by tens of percent over minutes; interleaving spreads the
// drift over every format alike), so every matrix stays in memory: ~3.5 GB for the two default
// shapes.
constexpr size_t kRotationBytes = size_t{96} << 20;  // 3x the L3 of the machine this was tuned on

struct Matrices {
  std::vector<PackedMatrix> copies;
  size_t bytes = 0;  // one copy's packed bytes
  double bytes_per_weight = 0;
};
std::map<std::string, std::unique_ptr<Matrices>> g_matrices;
bool g_hot = false;  // --hot: one copy, weights stay in cache (compute cost without DRAM)

const Matrices& matrices(const Config& c, int64_t n, int64_t k) {
  // OpenBLAS multiplies the dense f32 matrices.
  const std::string key =
      fmt::format("{}/{}/{}/{}x{}", c.kind == Kind::OpenBlas ? "dense" : c.format, c.pattern,
                  dtype_label(c.dtype), n, k);
  auto& slot = g_matrices[key];
  if (slot) return *slot;
  slot = std::make_unique<Matrices>();
  const auto values = random_weights(c, n, k, std::hash<std::string>{}(key));
  PackedMatrix packed =
      pack(Tensor::from_f32("w", c.dtype, {n, k}, values), c.format_kind, c.pack_pattern);
  slot->bytes = packed.total_bytes();
  slot->bytes_per_weight = packed.bytes_per_weight();
  slot->copies.assign(g_hot ? 1 : rotation_copies(slot->bytes, kRotationBytes, 64), packed);
  return *slot;
}

std::vector<float> random_x(int64_t count) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(count);
  for (float& v : x) v = uniform(rng);
  return x;
}

// ---- results ------------------------------------------------------------------------------------
struct Entry {
  Config config;
  int64_t m, n, k;
  double median_us = NAN;
  double bytes_per_weight = 0;
  size_t bytes = 0;
};
std::map<std::string, Entry> g_entries;  // by benchmark name
std::vector<std::string> g_order;

// The median of each benchmark into its entry.
void record_median(const std::string& name, double seconds) {
  // Registered names carry no underscore suffix, so they match the entries' keys.
  auto it = g_entries.find(name);
  if (it != g_entries.end()) it->second.median_us = seconds * 1e6;
}

void run_gemm(benchmark::State& state, const std::string& name, const Config& c, int64_t m,
              int64_t n, int64_t k) {
  const Matrices& cur = matrices(c, n, k);
  const std::vector<float> x = random_x(m * k);
  std::vector<float> y(m * n);
  Rotation rotation(cur.copies.size());
  for (auto _ : state) {
    const PackedMatrix& w = cur.copies[rotation.next()];
    if (c.kind == Kind::Packed) {
      gemm(x, m, w, y, Backend::Simd);
    } else {
#ifdef SPARSA_HAVE_OPENBLAS
      const float* wp = w.as<float>("values").data();
      if (m == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(k), 1.0f, wp,
                    static_cast<int>(k), x.data(), 1, 0.0f, y.data(), 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                    static_cast<int>(n), static_cast<int>(k), 1.0f, x.data(), static_cast<int>(k),
                    wp, static_cast<int>(k), 0.0f, y.data(), static_cast<int>(n));
      }
#endif
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double bytes = static_cast<double>(cur.bytes) + 4.0 * (m * k + m * n);
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  // OpenBLAS's pthread workers spin for ~0.1 s after a call before they sleep; let them park so
  // they do not steal a core from the next benchmark.
  if (c.kind == Kind::OpenBlas) std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto& e = g_entries[name];
  e.bytes_per_weight = cur.bytes_per_weight;
  e.bytes = cur.bytes;
}

// ---- the run ------------------------------------------------------------------------------------
// The best SIMD target Highway dispatches to on this CPU.
std::string simd_target() {
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  return targets == 0 ? "none" : hwy::TargetName(targets & -targets);
}

std::string scheduling_policy() {
  switch (sched_getscheduler(0)) {
    case SCHED_FIFO:
      return "SCHED_FIFO";
    case SCHED_RR:
      return "SCHED_RR";
    default:
      return "SCHED_OTHER";
  }
}

int run(int argc, char** argv) {
  bool quick = false;
  int reps = 0;
  std::string out;
  const bool ok = init_benchmark(argc, argv, /*interleave=*/true, [&](const std::string& arg) {
    if (arg == "--quick") {
      quick = true;
    } else if (arg.rfind("--reps=", 0) == 0) {
      reps = std::stoi(arg.substr(7));
    } else if (arg == "--hot") {
      g_hot = true;
    } else if (arg.rfind("--out=", 0) == 0) {
      out = arg.substr(6);
    } else {
      return false;
    }
    return true;
  });
  if (!ok) return 1;

  const int threads = omp_get_max_threads();
#ifdef SPARSA_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#endif
  struct Shape {
    int64_t n, k;
  };
  const std::vector<Shape> shapes =
      quick ? std::vector<Shape>{{1024, 1024}} : std::vector<Shape>{{4096, 4096}, {11008, 4096}};
  const std::vector<int64_t> ms =
      quick ? std::vector<int64_t>{1, 16} : std::vector<int64_t>{1, 16, 256};
  const int repetitions = reps > 0 ? reps : quick ? 3 : 11;
  const double min_time = quick ? 0.01 : 0.05;

  const std::string load_before = load_average();
  for (const Shape& s : shapes)
    for (const Config& c : all_configs())
      for (int64_t m : ms) {
        const std::string name = fmt::format("{}/{}/{}/M={}/N={}/K={}", c.format, c.pattern,
                                             dtype_label(c.dtype), m, s.n, s.k);
        g_entries[name] = Entry{c, m, s.n, s.k};
        g_order.push_back(name);
        register_repeated(
            name, [name, c, m, s](benchmark::State& st) { run_gemm(st, name, c, m, s.n, s.k); },
            benchmark::kMillisecond, repetitions, min_time);
      }
  MedianReporter reporter(record_median, isatty(1) ? benchmark::ConsoleReporter::OO_Defaults
                                                    : benchmark::ConsoleReporter::OO_None);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const std::string load_after = load_average();
  g_matrices.clear();

  // Baselines of the same run: dense f32 SIMD and OpenBLAS at the same (M, N, K).
  auto time_of = [&](const std::string& format, int64_t m, int64_t n, int64_t k) {
    for (const auto& [name, e] : g_entries)
      if (e.config.format == format && e.config.dtype == DType::F32 && e.m == m && e.n == n &&
          e.k == k)
        return e.median_us;
    return static_cast<double>(NAN);
  };
  nlohmann::json records = nlohmann::json::array();
  fmt::print("\n{:<9} {:<8} {:<5} {:>4} {:>11} {:>10} {:>8} {:>7} {:>9} {:>8}\n", "format",
             "pattern", "dtype", "M", "N x K", "median ms", "GB/s", "B/w", "vs dense", "vs BLAS");
  for (const auto& name : g_order) {
    const Entry& e = g_entries[name];
    if (std::isnan(e.median_us)) continue;  // filtered out
    const double dense = time_of("dense", e.m, e.n, e.k);
    const double blas = time_of("openblas", e.m, e.n, e.k);
    const double bytes = static_cast<double>(e.bytes) + 4.0 * (e.m * e.k + e.m * e.n);
    const double gbps = bytes / (e.median_us * 1e-6) / 1e9;
    fmt::print("{:<9} {:<8} {:<5} {:>4} {:>11} {:>10.3f} {:>8.1f} {:>7.3f} {:>8.2f}x {:>7.2f}x\n",
               e.config.format, e.config.pattern, dtype_label(e.config.dtype), e.m,
               fmt::format("{}x{}", e.n, e.k), e.median_us / 1e3, gbps, e.bytes_per_weight,
               dense / e.median_us, blas / e.median_us);
    records.push_back(
        {{"format", e.config.format},
         {"pattern", e.config.pattern},
         {"dtype", dtype_label(e.config.dtype)},
         {"M", e.m},
         {"N", e.n},
         {"K", e.k},
         {"time_us", e.median_us},
         {"dense_simd_us", or_null(dense)},
         {"openblas_us", or_null(blas)},
         {"bytes_per_weight", e.bytes_per_weight},
         {"gb_per_s", gbps},
         {"speedup", or_null(dense / e.median_us)}});
  }
  const std::string date = today();
  nlohmann::json doc = {
      {"device", fmt::format("{}, {} cores", cpu_model(), threads)},
      {"date", date},
      {"host", hostname()},
      {"threads", threads},
      {"simd_target", simd_target()},
      {"scheduling", scheduling_policy()},
      {"load_average_before", load_before},
      {"load_average_after", load_after},
      {"method",
       fmt::format("median of {} repetitions (wall-clock, repetitions of all benchmarks randomly "
                   "interleaved); weights rotated over >= {} MiB of copies so they stream from "
                   "DRAM; GB/s counts packed weights + X + Y",
                   repetitions, kRotationBytes >> 20)},
      {"quick", quick},
      {"hot", g_hot},
      {"records", records}};
  out = write_results(out, "cpu-gemm", doc);
  fmt::print("\n{} threads, {}, {}; load average before {} / after {}; wrote {}\n", threads,
             simd_target(), scheduling_policy(), load_before, load_after, out);
  return 0;
}

}  // namespace
}  // namespace sparsa::bench

int main(int argc, char** argv) {
  return sparsa::bench::guarded_main("cpu_gemm", sparsa::bench::run, argc, argv);
}
