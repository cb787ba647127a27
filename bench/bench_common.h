// Scaffolding shared by the CPU benchmarks (cpu_gemm, cpu_codec): host and device facts for the
// results JSON, command-line splitting, registration of repeated wall-clock benchmarks, the
// median reporter, rotation over weight copies (so weights stream from DRAM) and JSON writing.
#pragma once

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace sparsa::bench {

// ---- host facts -----------------------------------------------------------------------------
inline std::string today() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

inline std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf[0] ? buf : "host";
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto model = line.substr(colon + 1);
        model.erase(0, model.find_first_not_of(' '));
        return model;
      }
    }
  }
  return "unknown CPU";
}

inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return fmt::format("{} {} {}", a, b, c);
}

// The last-level cache, from sysfs and sysconf (32 MiB when both are silent).
inline size_t llc_bytes() {
  size_t best = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream in(fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/size", index));
    std::string text;
    if (!(in >> text) || text.empty()) continue;
    size_t value = std::stoull(text);
    const char unit = text.back();
    value <<= unit == 'K' ? 10 : unit == 'M' ? 20 : unit == 'G' ? 30 : 0;
    best = std::max(best, value);
  }
  // Virtual machines often lack the sysfs cache entries; glibc asks CPUID.
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) best = std::max(best, static_cast<size_t>(l3));
  return best ? best : size_t{32} << 20;
}

// ---- command line -----------------------------------------------------------------------------
// Splits argv: `own(arg)` consumes the benchmark's own options (returns true); the rest goes to
// google-benchmark, which is initialised here. `interleave` puts
// --benchmark_enable_random_interleaving=true first (a later =false on the command line wins):
// repetitions of all benchmarks then run in random order, spreading the drift of a shared host's
// DRAM bandwidth over every benchmark alike. False when an argument is not recognised.
inline bool init_benchmark(int argc, char** argv, bool interleave,
                           const std::function<bool(const std::string&)>& own) {
  std::vector<char*> rest = {argv[0]};
  static char interleave_flag[] = "--benchmark_enable_random_interleaving=true";
  if (interleave) rest.push_back(interleave_flag);
  for (int i = 1; i < argc; ++i)
    if (!own(argv[i])) rest.push_back(argv[i]);
  int bargc = static_cast<int>(rest.size());
  benchmark::Initialize(&bargc, rest.data());
  return !benchmark::ReportUnrecognizedArguments(bargc, rest.data());
}

// ---- registration and results ----------------------------------------------------------------
// Wall-clock, `repetitions` repetitions of at least `min_time` seconds, aggregates only (the
// median is what the reporter keeps).
template <typename Fn>
benchmark::internal::Benchmark* register_repeated(const std::string& name, Fn&& fn,
                                                   benchmark::TimeUnit unit, int repetitions,
                                                   double min_time) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn))
      ->UseRealTime()
      ->Unit(unit)
      ->Repetitions(repetitions)
      ->ReportAggregatesOnly(true)
      ->MinTime(min_time);
}

// Prints as the console reporter does and hands every median to `on_median(name, seconds)`
// (name: the registered name, without the aggregate suffix).
class MedianReporter : public benchmark::ConsoleReporter {
 public:
  MedianReporter(std::function<void(const std::string&, double)> on_median,
                 OutputOptions options = OO_Defaults)
      : ConsoleReporter(options), on_median_(std::move(on_median)) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Aggregate || run.aggregate_name != "median") continue;
      // Adjusted times are in the run's unit; the multiplier converts seconds to that unit.
      on_median_(run.run_name.function_name,
                 run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit));
    }
    ConsoleReporter::ReportRuns(runs);
  }

 private:
  std::function<void(const std::string&, double)> on_median_;
};

// ---- weight-copy rotation -----------------------------------------------------------------------
// How many copies of a `bytes`-sized matrix fill `rotation_bytes` (at least 1, at most
// `max_copies`): cycling through them, each call reads its weights from DRAM, not from cache.
inline size_t rotation_copies(size_t bytes, size_t rotation_bytes, size_t max_copies) {
  return std::clamp<size_t>((rotation_bytes + bytes - 1) / std::max<size_t>(bytes, 1), 1,
                            max_copies);
}

// The index of the copy a call uses, advancing round-robin over `count` copies.
class Rotation {
 public:
  explicit Rotation(size_t count) : count_(count) {}
  size_t next() {
    const size_t current = next_;
    next_ = next_ + 1 == count_ ? 0 : next_ + 1;
    return current;
  }

 private:
  size_t count_, next_ = 0;
};

// ---- JSON ---------------------------------------------------------------------------------------
inline nlohmann::json or_null(double v) {
  return std::isnan(v) ? nlohmann::json() : nlohmann::json(v);
}

// Writes `doc` (indented) to `out`, or to bench/results/<stem>-<host>-<date>.json when `out` is
// empty; returns the path written.
inline std::string write_results(std::string out, const std::string& stem,
                                 const nlohmann::json& doc) {
  if (out.empty()) out = fmt::format("bench/results/{}-{}-{}.json", stem, hostname(), today());
  const std::filesystem::path path(out);
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << doc.dump(2) << "\n";
  return out;
}

// main(): runs `run`, printing any exception as "<program>: <message>" with exit code 2.
inline int guarded_main(const char* program, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 2;
  }
}

}  // namespace sparsa::bench
