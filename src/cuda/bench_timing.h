// CUDA-event timing for the GEMM benchmark, two ways:
//  - per call: each launch between its own pair of events, the median over the timed launches
//    after a warm-up. Launch gaps on the host fall between event pairs and are not counted, but
//    every call pays the launch and ramp-up of a lone kernel (~3.8 us for an empty kernel on the
//    H100, docs/kernels-gpu.md).
//  - graph: `calls` consecutive launches captured into one CUDA graph, events around each graph
//    launch, the median over the timed replays divided by `calls`. This is how a model's decode
//    runs (back-to-back layers replayed from a graph), and it is fair only with every baseline
//    timed the same way.
#pragma once

#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>  // header-only; a no-op unless a profiler is attached

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"

namespace sparsa::cuda::bench {

// Median of `us` (reordered).
inline double median_of(std::vector<double>& us) {
  std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
  return us[us.size() / 2];
}

// Each timed measurement is an NVTX range named `what` (so a profiler can select one phase's
// kernels, e.g. `ncu --nvtx --nvtx-include "cuSPARSELt graph/"`), and with SPARSA_BENCH_TRACE=1
// its wall-clock start and end are printed on stdout in nvidia-smi's timestamp format, so that a
// clock and power log taken beside the run (scripts/gpu_power_log.sh) can be split by phase.
inline void trace_phase(const char* what, bool begin) {
  static const bool on = [] {
    const char* e = std::getenv("SPARSA_BENCH_TRACE");
    return e != nullptr && *e != '\0' && *e != '0';
  }();
  if (what == nullptr) return;
  if (begin)
    nvtxRangePushA(what);
  else
    nvtxRangePop();
  if (!on) return;
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y/%m/%d %H:%M:%S", &tm);
  std::printf("[trace %s.%03d] %s %s\n", stamp, static_cast<int>(ms.count()), what,
              begin ? "begin" : "end");
  std::fflush(stdout);
}

// Sustained warm-up: launch(first), timed alone, then as many more back to back as fill about
// `ms` milliseconds, without waiting for them, so launches queued next start at the clock a
// sustained run settles to (under the power cap) rather than after an idle gap. Returns the
// next launch index.
inline int warm_for(const std::function<cudaError_t(int)>& launch, int first, double ms,
                    cudaStream_t stream) {
  cudaEvent_t a, b;
  check_cuda(cudaEventCreate(&a), "cudaEventCreate");
  check_cuda(cudaEventCreate(&b), "cudaEventCreate");
  check_cuda(cudaEventRecord(a, stream), "cudaEventRecord");
  check_cuda(launch(first++), "warm-up launch");
  check_cuda(cudaEventRecord(b, stream), "cudaEventRecord");
  check_cuda(cudaEventSynchronize(b), "warm-up launch");
  float one_ms = 0;
  check_cuda(cudaEventElapsedTime(&one_ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  const double n = std::clamp(std::ceil(ms / std::max(one_ms, 1e-3f)), 1.0, 1e6);
  for (int k = 0; k < static_cast<int>(n); ++k) check_cuda(launch(first++), "warm-up launch");
  return first;
}

// Median microseconds of `launch(i)` over `repeats` launches after `warmup` (i counts up from
// 0 across warm-up and timed launches, so callers rotate weight copies with i % copies), and
// after `warm_ms` milliseconds of sustained launches when positive (warm_for).
// Throws sparsa::Error when a launch or CUDA call fails. `what` names the phase in the trace.
inline double median_us(const std::function<cudaError_t(int)>& launch, int warmup, int repeats,
                        cudaStream_t stream, const char* what = nullptr, double warm_ms = 0) {
  trace_phase(what, true);
  int i = 0;
  for (; i < warmup; ++i) check_cuda(launch(i), "warm-up launch");
  if (warm_ms > 0) i = warm_for(launch, i, warm_ms, stream);
  std::vector<cudaEvent_t> events(2 * repeats);
  for (auto& e : events) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
  for (int r = 0; r < repeats; ++r, ++i) {
    check_cuda(cudaEventRecord(events[2 * r], stream), "cudaEventRecord");
    check_cuda(launch(i), "timed launch");
    check_cuda(cudaEventRecord(events[2 * r + 1], stream), "cudaEventRecord");
  }
  check_cuda(cudaStreamSynchronize(stream), "timed launches");
  trace_phase(what, false);
  std::vector<double> us(repeats);
  for (int r = 0; r < repeats; ++r) {
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, events[2 * r], events[2 * r + 1]), "cudaEventElapsedTime");
    us[r] = ms * 1000.0;
  }
  for (auto& e : events) cudaEventDestroy(e);
  return median_of(us);
}

// `calls` consecutive launches launch(0) .. launch(calls - 1) captured into one graph.
class CallGraph {
 public:
  // Throws sparsa::Error naming `what` when capture or instantiation fails (the stream is left
  // out of capture mode either way).
  CallGraph(const std::function<cudaError_t(int)>& launch, int calls, cudaStream_t stream,
            const char* what)
      : calls_(calls), stream_(stream), what_(std::string(what) + " graph") {
    check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal),
               "cudaStreamBeginCapture");
    cudaError_t status = cudaSuccess;
    for (int i = 0; i < calls && status == cudaSuccess; ++i) status = launch(i);
    cudaGraph_t graph = nullptr;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (status == cudaSuccess) status = end;
    if (status == cudaSuccess) status = cudaGraphInstantiate(&exec_, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (status != cudaSuccess) {
      cudaGetLastError();  // a failed capture must not surface at the next launch
      fail("{}: capturing {} calls into a CUDA graph: {}", what, calls, cudaGetErrorString(status));
    }
  }
  ~CallGraph() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }
  CallGraph(const CallGraph&) = delete;
  CallGraph& operator=(const CallGraph&) = delete;

  void replay() { check_cuda(cudaGraphLaunch(exec_, stream_), "cudaGraphLaunch"); }

  // Median microseconds per call over `repeats` replays after `warmup` replays (and `warm_ms`
  // milliseconds of back-to-back replays when positive).
  double median_us_per_call(int warmup, int repeats, double warm_ms = 0) {
    return median_us([&](int) { return cudaGraphLaunch(exec_, stream_); }, warmup, repeats, stream_,
                     what_.c_str(), warm_ms) /
           calls_;
  }

 private:
  int calls_;
  cudaStream_t stream_;
  std::string what_;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace sparsa::cuda::bench
