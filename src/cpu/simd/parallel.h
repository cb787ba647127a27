// Splits the output rows of a kernel between the OpenMP threads. Kept outside the Highway
// per-target code: the parallel region calls the dispatched per-target function once per thread,
// so no OpenMP-outlined function ever needs the target attributes.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace sparsa::cpu {

// Below this much work (multiply-adds, weighted by a decode cost factor in the callers) a
// second thread costs more than it saves: ~50 us single-threaded against a fork/join that can
// take tens of microseconds when the workers have gone to sleep.
inline constexpr double kMinParallelWork = 1 << 18;

// Calls fn(begin, end) on contiguous ranges of [0, rows) whose bounds are multiples of `grain`
// (except the last end), one range per thread. Contiguous halves keep each core streaming its
// own part of the weights, which is what matters when the product is memory-bound.
template <class Fn>
void parallel_rows(int64_t rows, int64_t grain, double work, Fn&& fn) {
  if (rows <= 0) return;
  const int64_t units = (rows + grain - 1) / grain;
  int threads = work < kMinParallelWork ? 1 : omp_get_max_threads();
  threads = static_cast<int>(std::min<int64_t>(threads, units));
  if (threads <= 1) {
    fn(int64_t{0}, rows);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = std::min(rows, units * t / nt * grain);
    const int64_t end = std::min(rows, units * (t + 1) / nt * grain);
    if (begin < end) fn(begin, end);
  }
}

}  // namespace sparsa::cpu
