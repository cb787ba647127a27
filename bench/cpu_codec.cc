// cpu_codec: the fused compressed GEMV/GEMM kernels (sparsa::compressed_gemm) against the
// machine's measured memory bandwidth and the dense f32/f16 SIMD kernels, in one run.
//
//   cpu_codec [--quick] [--resident] [--x-int8] [--out=FILE] [--n=N] [--k=K]
//             [google-benchmark flags]
//
// Y[M, N] = X[M, K] * W[N, K]^T for {dense, 2:4, bitmap 50%, 64:2:8} x {int8, int4, codebook4} and the
// uncompressed baselines (dense f32, dense f16, 2:4 f16, bitmap f16, 64:2:8 f16), at M = 1 (decode)
// and 16.
// Every benchmark cycles through copies of its matrix totalling 4x the last-level cache (read
// from sysfs; at least 128 MiB), so the weights stream from DRAM. Bandwidth is measured by the
// same harness in the same run: a read (sum over max(512 MiB, 4x LLC)) and a copy of half of
// that, OpenMP over all cores, taken before and after the kernels. GB/s of a kernel counts every byte it must read (codes,
// scales, codebooks, format metadata, X) and write (Y). The JSON (--out, default
// bench/results/cpu-codec-<host>-<date>.json) holds the device, date, bandwidths, and per record
// the median time (wall; and process CPU time per call over all threads, "process_cpu_us",
// which a shared machine inflates less), bytes per weight, GB/s, fraction of the read bandwidth and the speed-ups
// over dense f32 and f16 at the same (M, N, K). --resident keeps one copy of each matrix (no
// rotation), so a matrix that fits the cache measures the decode cost alone; its JSON says so.
// --x-int8 adds {dense, 2:4, bitmap 50%} x {int8, int4, codebook4} with int8 activations (CompressedGemmOptions::
// int8_activations; X's quantisation is inside the timed call), labelled "+x8", each with its
// relative error against the f32-activation kernel on the same X and W.
#include <benchmark/benchmark.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "sparsa/codec.h"
#include "sparsa/format.h"
#include "sparsa/kernels.h"
#include "sparsa/pattern.h"
#include "sparsa/prune.h"
#include "sparsa/tensor.h"

namespace sparsa::bench {
namespace {

// Weights rotate over copies totalling 4x the last-level cache (at least 128 MiB), so they
// stream from DRAM; the bandwidth probe reads as much.
size_t kRotationBytes = std::max(size_t{128} << 20, 4 * llc_bytes());  // 0: --resident
const size_t kStreamBytes = std::max(size_t{512} << 20, 4 * llc_bytes()) / 64 * 64;

struct Config {
  std::string format;  // "dense", "2:4", "bitmap50", "64:2:8" (V:N:M)
  std::string codec;   // codec spec, or "f32"/"f16" for the uncompressed packed matrix
  bool x8 = false;     // int8 activations (--x-int8)
};
bool g_x8 = false;

std::vector<Config> all_configs() {
  std::vector<Config> c;
  for (const char* f : {"dense", "2:4", "bitmap50", "64:2:8"}) {
    c.push_back({f, "f16"});
    for (const char* codec : {"int8", "int4", "codebook4"}) {
      c.push_back({f, codec});
      if (g_x8) c.push_back({f, codec, true});
    }
  }
  c.insert(c.begin(), Config{"dense", "f32"});
  return c;
}

std::string label(const Config& c) {
  return c.codec == "f32" || c.codec == "f16" ? fmt::format("{}/{}", c.format, c.codec)
                                              : fmt::format("{}+{}{}", c.format, c.codec,
                                                            c.x8 ? "+x8" : "");
}

// ---- weights ----------------------------------------------------------------------------------
// Gaussian-like trained weights (sd 0.02) with the format's pattern applied, as f16.
Tensor weights(const Config& c, int64_t n, int64_t k, Pattern* pattern, FormatKind* format) {
  std::mt19937_64 rng(n * 31 + k);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(n * k);
  for (float& v : w) {
    do v = normal(rng);
    while (v == 0.0f);
  }
  *pattern = Pattern{};
  *format = FormatKind::Dense;
  if (c.format == "2:4") {
    pattern->kind = PatternKind::NM;
    pattern->n = 2;
    pattern->m = 4;
    *format = FormatKind::NM;
    for (int64_t i = 0; i < n * k; i += 4) {  // keep the 2 largest of each 4
      int64_t idx[4] = {0, 1, 2, 3};
      std::sort(idx, idx + 4, [&](int64_t a, int64_t b) {
        return std::fabs(w[i + a]) > std::fabs(w[i + b]);
      });
      w[i + idx[2]] = 0;
      w[i + idx[3]] = 0;
    }
  } else if (c.format == "64:2:8") {  // magnitude V:N:M mask (sparsa/prune.h)
    *pattern = Pattern::parse("64:2:8");
    *format = FormatKind::VNM;
    const Tensor t = Tensor::from_f32("w", DType::F32, {n, k}, w);
    const std::vector<float> scores = make_criterion("magnitude")->scores(t);
    const std::vector<uint8_t> mask = make_mask(*pattern, scores, n, k);
    for (int64_t i = 0; i < n * k; ++i)
      if (!mask[i]) w[i] = 0;
  } else if (c.format == "bitmap50") {
    pattern->kind = PatternKind::Unstructured;
    pattern->sparsity = 0.5;
    *format = FormatKind::Bitmap;
    std::bernoulli_distribution coin(0.5);
    for (float& v : w)
      if (coin(rng)) v = 0;
  }
  return Tensor::from_f32("w", c.codec == "f32" ? DType::F32 : DType::F16, {n, k}, w);
}

struct Current {
  std::string key;
  std::vector<PackedMatrix> packed;          // uncompressed configs
  std::vector<CompressedMatrix> compressed;  // codec configs
  size_t bytes = 0;                          // one copy, all arrays
  CompressionStats stats;
};
Current g_current;

const Current& matrices(const Config& c, int64_t n, int64_t k) {
  // The matrices do not depend on the activations: "+x8" shares the f32-activation copies.
  const std::string key = fmt::format("{}/{}x{}", label(Config{c.format, c.codec}), n, k);
  if (g_current.key == key) return g_current;
  g_current = Current{};
  Pattern pattern;
  FormatKind format;
  const Tensor dense = weights(c, n, k, &pattern, &format);  // sets pattern and format
  const PackedMatrix packed = pack(dense, format, pattern);
  if (c.codec == "f32" || c.codec == "f16") {
    g_current.bytes = packed.total_bytes();
    g_current.stats = compression_stats(packed);
    g_current.packed.assign(rotation_copies(g_current.bytes, kRotationBytes, 4096), packed);
  } else {
    const CompressedMatrix cm = compress(packed, CodecParams::parse(c.codec));
    if (!has_fused_kernel(cm)) throw Error(fmt::format("{}: no fused kernel", key));
    g_current.bytes = cm.packed.total_bytes();
    g_current.stats = compression_stats(cm);
    g_current.compressed.assign(rotation_copies(g_current.bytes, kRotationBytes, 4096), cm);
  }
  g_current.key = key;
  return g_current;
}

// ---- results ------------------------------------------------------------------------------------
struct Entry {
  Config config;
  int64_t m = 0, n = 0, k = 0;
  double median_us = NAN;
  double bytes = 0;  // read + written per call
  CompressionStats stats;
  double x8_error = NAN;  // +x8: ||y - y_f32act|| / ||y_f32act||
  std::vector<double> cpu_us;  // per repetition: process CPU time per call, all threads
};

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
std::map<std::string, Entry> g_entries;
std::vector<std::string> g_order;
std::map<std::string, double> g_stream_gbps;  // "read" / "copy", before and after

// The median of each benchmark: into its entry, or a bandwidth probe's GB/s.
void record_median(const std::string& name, double seconds) {
  if (auto it = g_entries.find(name); it != g_entries.end()) {
    it->second.median_us = seconds * 1e6;
  } else if (name.rfind("stream/", 0) == 0) {
    const bool copy = name.find("copy") != std::string::npos;
    g_stream_gbps[name] =
        (copy ? 2.0 : 1.0) * (copy ? kStreamBytes / 2 : kStreamBytes) / seconds / 1e9;
  }
}

// STREAM-like: read (sum) of kStreamBytes and copy of half of it, all cores.
std::vector<float>& stream_buffer() {
  static std::vector<float> buffer = [] {
    std::vector<float> b(kStreamBytes / sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i & 1023);
    return b;
  }();
  return buffer;
}

void stream_read(benchmark::State& state) {
  const std::vector<float>& b = stream_buffer();
  const auto* words = reinterpret_cast<const uint64_t*>(b.data());
  const size_t count = b.size() / 2;
  for (auto _ : state) {
    // XOR is associative, so the compiler vectorises it (a float sum would stay serial).
    uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(^ : total)
    for (size_t i = 0; i < count; ++i) total ^= words[i];
    benchmark::DoNotOptimize(total);
  }
  state.counters["GB/s"] =
      benchmark::Counter(double(kStreamBytes), benchmark::Counter::kIsIterationInvariantRate);
}

void stream_copy(benchmark::State& state) {
  std::vector<float>& b = stream_buffer();
  const size_t half = b.size() / 2;
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < half; i += 4096)
      std::copy_n(b.data() + i, std::min<size_t>(4096, half - i), b.data() + half + i);
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] =
      benchmark::Counter(double(kStreamBytes), benchmark::Counter::kIsIterationInvariantRate);
}

void run_gemm(benchmark::State& state, const std::string& name, const Config& c, int64_t m,
              int64_t n, int64_t k) {
  const Current& cur = matrices(c, n, k);
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(m * k), y(m * n);
  for (float& v : x) v = uniform(rng);
  Rotation rotation(std::max(cur.packed.size(), cur.compressed.size()));
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    const size_t next = rotation.next();
    if (!cur.packed.empty())
      gemm(x, m, cur.packed[next], y, Backend::Simd);
    else
      compressed_gemm(x, m, cur.compressed[next], y, Backend::Simd,
                      CompressedGemmOptions{.int8_activations = c.x8});
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double cpu_per_call = (process_cpu_seconds() - cpu0) / static_cast<double>(state.iterations());
  const double bytes = static_cast<double>(cur.bytes) + 4.0 * (m * k + m * n);
  state.counters["GB/s"] =
      benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  Entry& e = g_entries[name];
  e.bytes = bytes;
  e.stats = cur.stats;
  e.cpu_us.push_back(cpu_per_call * 1e6);
  if (c.x8) {  // against the f32-activation kernel on the same X and W
    std::vector<float> ref(m * n);
    compressed_gemm(x, m, cur.compressed[0], y, Backend::Simd,
                    CompressedGemmOptions{.int8_activations = true});
    compressed_gemm(x, m, cur.compressed[0], ref, Backend::Simd);
    double num = 0, den = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      num += double(y[i] - ref[i]) * (y[i] - ref[i]);
      den += double(ref[i]) * ref[i];
    }
    e.x8_error = den > 0 ? std::sqrt(num / den) : 0.0;
  }
}

// ---- the run ------------------------------------------------------------------------------------
int run(int argc, char** argv) {
  bool quick = false;
  std::string out;
  int64_t n = 4096, k = 4096;
  const bool ok = init_benchmark(argc, argv, /*interleave=*/false, [&](const std::string& arg) {
    if (arg == "--quick") quick = true;
    else if (arg == "--resident") kRotationBytes = 0;
    else if (arg == "--x-int8") g_x8 = true;
    else if (arg.rfind("--out=", 0) == 0) out = arg.substr(6);
    else if (arg.rfind("--n=", 0) == 0) n = std::stoll(arg.substr(4));
    else if (arg.rfind("--k=", 0) == 0) k = std::stoll(arg.substr(4));
    else return false;
    return true;
  });
  if (!ok) return 1;
  if (quick) n = k = 1024;
  const std::vector<int64_t> ms = {1, 16};
  const int repetitions = quick ? 3 : 7;
  const double min_time = quick ? 0.02 : 0.1;

  auto add_stream = [&](const char* when) {
    for (const char* what : {"read", "copy"}) {
      const std::string name = fmt::format("stream/{}/{}", what, when);
      register_repeated(name, what[0] == 'r' ? stream_read : stream_copy, benchmark::kMillisecond,
                        repetitions, min_time);
    }
  };
  const std::string load_before = load_average();
  add_stream("before");
  for (int64_t m : ms)
    for (const Config& c : all_configs()) {
      const std::string name = fmt::format("{}/M={}/N={}/K={}", label(c), m, n, k);
      g_entries[name] = Entry{c, m, n, k};
      g_order.push_back(name);
      register_repeated(
          name, [name, c, m, n, k](benchmark::State& st) { run_gemm(st, name, c, m, n, k); },
          benchmark::kMicrosecond, repetitions, min_time);
    }
  add_stream("after");
  MedianReporter reporter(record_median);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const std::string load_after = load_average();
  g_current = Current{};

  // The read bandwidth: the better of the two measurements around the kernels.
  const double read_bw = std::max(g_stream_gbps["stream/read/before"], g_stream_gbps["stream/read/after"]);
  auto time_of = [&](const std::string& lbl, int64_t m) -> double {
    for (const auto& [name, e] : g_entries)
      if (label(e.config) == lbl && e.m == m) return e.median_us;
    return NAN;
  };
  nlohmann::json records = nlohmann::json::array();
  fmt::print("\nread bandwidth {:.1f} / {:.1f} GB/s, copy {:.1f} / {:.1f} GB/s (before / after)\n",
             g_stream_gbps["stream/read/before"], g_stream_gbps["stream/read/after"],
             g_stream_gbps["stream/copy/before"], g_stream_gbps["stream/copy/after"]);
  fmt::print("{:<20} {:>3} {:>10} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6} {:>8} {:>8}\n", "pattern",
             "M", "median us", "cpu us", "B/w", "val b", "meta b", "scale b", "GB/s", "of bw", "vs f32", "vs f16");
  for (const auto& name : g_order) {
    const Entry& e = g_entries[name];
    if (std::isnan(e.median_us)) continue;
    const double f32 = time_of("dense/f32", e.m), f16 = time_of("dense/f16", e.m);
    const double gbps = e.bytes / (e.median_us * 1e-6) / 1e9;
    const double bpw = e.stats.total_bits() / 8;
    fmt::print("{:<20} {:>3} {:>10.1f} {:>9.1f} {:>7.3f} {:>7.3f} {:>7.3f} {:>7.3f} {:>8.1f} {:>5.0f}% {:>7.2f}x {:>7.2f}x{}\n",
               label(e.config), e.m, e.median_us, median(e.cpu_us), bpw, e.stats.value_bits(),
               e.stats.metadata_bits(), e.stats.scale_bits(), gbps, 100 * gbps / read_bw,
               f32 / e.median_us, f16 / e.median_us,
               e.config.x8 ? fmt::format("  err {:.2e}", e.x8_error) : "");
    records.push_back({{"pattern", label(e.config)},
                       {"format", e.config.format},
                       {"codec", e.config.codec},
                       {"M", e.m},
                       {"N", e.n},
                       {"K", e.k},
                       {"time_us", e.median_us},
                       {"bytes_per_weight", bpw},
                       {"value_bits_per_weight", e.stats.value_bits()},
                       {"metadata_bits_per_weight", e.stats.metadata_bits()},
                       {"scale_bits_per_weight", e.stats.scale_bits()},
                       {"gb_per_s", gbps},
                       {"fraction_of_read_bandwidth", gbps / read_bw},
                       {"dense_f32_us", or_null(f32)},
                       {"dense_f16_us", or_null(f16)},
                       {"speedup_vs_f32", or_null(f32 / e.median_us)},
                       {"speedup_vs_f16", or_null(f16 / e.median_us)},
                       {"int8_activations", e.config.x8},
                       {"process_cpu_us", or_null(median(e.cpu_us))},
                       {"rel_error_vs_f32_activations", or_null(e.x8_error)}});
  }
  const std::string date = today();
  nlohmann::json doc = {
      {"device", fmt::format("{}, {} threads", cpu_model(), omp_get_max_threads())},
      {"date", date},
      {"host", hostname()},
      {"load_average_before", load_before},
      {"load_average_after", load_after},
      {"stream_gb_per_s", g_stream_gbps},
      {"last_level_cache_bytes", llc_bytes()},
      {"read_bandwidth_gb_per_s", read_bw},
      {"method", fmt::format("median of {} repetitions, wall-clock; weights rotated over >= {} "
                             "MiB of copies so they stream from DRAM; GB/s counts every array "
                             "of the (compressed) matrix + X + Y; bandwidth: sum over {} MiB "
                             "and copy of {} MiB, OpenMP, same run",
                             repetitions, kRotationBytes >> 20, kStreamBytes >> 20,
                             kStreamBytes >> 21)},
      {"quick", quick},
      {"cache_resident", kRotationBytes == 0},
      {"records", records}};
  out = write_results(out, "cpu-codec", doc);
  fmt::print("\nload average before {} / after {}; wrote {}\n", load_before, load_after, out);
  return 0;
}

}  // namespace
}  // namespace sparsa::bench

int main(int argc, char** argv) {
  return sparsa::bench::guarded_main("cpu_codec", sparsa::bench::run, argc, argv);
}
