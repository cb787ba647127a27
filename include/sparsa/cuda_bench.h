// `sparsa bench gemm`: times the GPU sparse GEMMs (src/cuda) against cuBLAS fp16 dense and,
// where the library is present, cuSPARSELt 2:4, at the shapes; prints a table and
// writes JSON. Declared without CUDA types so the CLI can include it in any build; defined only
// when sparsa is built with CUDA (SPARSA_WITH_CUDA).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sparsa::cuda {

struct GemmBenchOptions {
  std::string out;  // JSON file; empty: none
  // Weight shapes N x K; empty: 4096x4096, 11008x4096, 4096x11008, 14336x4096, 4096x14336,
  // 28672x8192, 8192x28672.
  std::vector<std::pair<int64_t, int64_t>> shapes;
  std::vector<int64_t> ms;            // tokens; empty: 1, 16, 64, 256, 2048, 8192
  std::vector<std::string> patterns;  // empty: 2:4, 64:2:5, 64:2:8, 128:2:16
  bool quick = false;                 // fewer shapes, tokens and repeats
  bool sweep_ctas = false;            // also time the decode path at several CTA counts (tuning)
  int repeats = 0;                    // timed launches per measurement; 0: automatic
  // Prefill (m > 16): every kernel (ours, cuBLAS, cuSPARSELt) runs back to back for at least
  // this many milliseconds right before its timed launches, per call and graph alike, so all are
  // timed at the clock a sustained run settles to under the power cap (session 14: after an idle
  // gap the first ~0.1-0.3 s run at ~1.95 GHz, sustained ones at ~1.2-1.5 GHz). 0: off.
  double prefill_warm_ms = 500;
};

// Runs the benchmark; returns a process exit code (0 ok, 1 a check failed, 2 bad options or
// no usable device). Prints progress and the table to stdout.
int run_gemm_bench(const GemmBenchOptions& options);

}  // namespace sparsa::cuda
