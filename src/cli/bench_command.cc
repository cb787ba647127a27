// sparsa bench gemm [--out FILE] [--shapes NxK,...] [--m LIST] [--patterns LIST] [--quick]:
// times the GPU sparse GEMMs against cuBLAS fp16 dense and cuSPARSELt (sparsa/cuda_bench.h).
// In a build without CUDA it says so and exits with code 2.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "sparsa/cuda_bench.h"
#include "sparsa/error.h"

namespace sparsa::cli {
namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

int64_t parse_count(const std::string& text, const char* option) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || v < 1)
    fail("bench gemm: {} '{}': expected a positive integer", option, text);
  return v;
}

struct BenchArgs {
  std::string out, shapes, ms, patterns;
  bool quick = false, sweep_ctas = false;
  int repeats = 0;
  double warm_ms = cuda::GemmBenchOptions{}.prefill_warm_ms;
};

cuda::GemmBenchOptions to_options(const BenchArgs& a) {
  cuda::GemmBenchOptions o;
  o.out = a.out;
  o.quick = a.quick;
  o.sweep_ctas = a.sweep_ctas;
  o.repeats = a.repeats;
  o.prefill_warm_ms = a.warm_ms;
  for (const auto& s : split_list(a.shapes)) {
    const size_t x = s.find('x');
    if (x == std::string::npos) fail("bench gemm: --shapes '{}': expected NxK, e.g. 4096x11008", s);
    o.shapes.emplace_back(parse_count(s.substr(0, x), "--shapes"),
                          parse_count(s.substr(x + 1), "--shapes"));
  }
  for (const auto& m : split_list(a.ms)) o.ms.push_back(parse_count(m, "--m"));
  o.patterns = split_list(a.patterns);
  return o;
}

}  // namespace

void register_bench_command(CLI::App& app) {
  CLI::App* bench = nullptr;
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_name() == "bench") bench = sub;
  if (!bench) {
    bench = app.add_subcommand("bench", "Benchmarks");
    bench->require_subcommand(1);
  }
  auto args = std::make_shared<BenchArgs>();
  CLI::App* gemm = bench->add_subcommand(
      "gemm", "GPU sparse GEMMs (2:4, V:2:M) vs cuBLAS fp16 dense and cuSPARSELt; table + JSON");
  gemm->add_option("--out", args->out, "Write the results as JSON to FILE");
  gemm->add_option("--shapes", args->shapes,
                   "Weight shapes NxK, comma-separated (default: the 7 of the issue)");
  gemm->add_option("--m", args->ms,
                   "Token counts, comma-separated (default: 1,16,64,256,2048,8192)");
  gemm->add_option("--patterns", args->patterns,
                   "Patterns, comma-separated (default: 2:4,64:2:5,64:2:8,128:2:16)");
  gemm->add_flag("--quick", args->quick, "Fewer shapes, token counts and repeats");
  gemm->add_flag("--sweep-ctas", args->sweep_ctas, "Also time the decode path at 1-4 CTAs per SM");
  gemm->add_option("--repeats", args->repeats,
                   "Timed launches per measurement (default: 30, quick: 10)");
  gemm->add_option("--warm-ms", args->warm_ms,
                   "Prefill (m > 16): milliseconds each kernel runs back to back before it is "
                   "timed, so every kernel is timed at the power-capped sustained clock (0: off)")
      ->check(CLI::Range(0.0, 60000.0))
      ->capture_default_str();
  gemm->callback([args] {
#ifdef SPARSA_WITH_CUDA
    const int code = cuda::run_gemm_bench(to_options(*args));
    if (code == 2) fail("bench gemm: no usable CUDA device");
    if (code != 0)
      throw std::runtime_error(
          "bench gemm: results failed their correctness check (see the table)");
#else
    (void)to_options(*args);  // still reject malformed options
    fail("sparsa was built without CUDA: bench gemm needs a CUDA build (SPARSA_CUDA=ON) and a GPU");
#endif
  });
}

}  // namespace sparsa::cli
