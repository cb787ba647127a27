// CUDA-event timing for the GEMM benchmark: each launch between its own pair of events, the
// median over the timed launches after a warm-up. Launch gaps on the host fall between event
// pairs and are not counted.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda::bench {

// Median microseconds of `launch(i)` over `repeats` launches after `warmup` (i counts up from
// 0 across warm-up and timed launches, so callers rotate weight copies with i % copies).
// Throws sparsa::Error when a launch or CUDA call fails.
inline double median_us(const std::function<cudaError_t(int)>& launch, int warmup, int repeats,
                        cudaStream_t stream) {
  int i = 0;
  for (; i < warmup; ++i) check_cuda(launch(i), "warm-up launch");
  std::vector<cudaEvent_t> events(2 * repeats);
  for (auto& e : events) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
  for (int r = 0; r < repeats; ++r, ++i) {
    check_cuda(cudaEventRecord(events[2 * r], stream), "cudaEventRecord");
    check_cuda(launch(i), "timed launch");
    check_cuda(cudaEventRecord(events[2 * r + 1], stream), "cudaEventRecord");
  }
  check_cuda(cudaStreamSynchronize(stream), "timed launches");
  std::vector<double> us(repeats);
  for (int r = 0; r < repeats; ++r) {
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, events[2 * r], events[2 * r + 1]), "cudaEventElapsedTime");
    us[r] = ms * 1000.0;
  }
  for (auto& e : events) cudaEventDestroy(e);
  std::nth_element(us.begin(), us.begin() + repeats / 2, us.end());
  return us[repeats / 2];
}

}  // namespace sparsa::cuda::bench
