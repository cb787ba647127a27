// `sparsa bench gemm` patterns with a codec, e.g. "2:4+codebook4", "64:2:8+int4:g64", and
// bitmaps "bitmapPP" (fp16 values, PP% kept) and "bitmapPP+CODEC" (int8, int4 with groups of
// 32 / 64 / 128, codebook4, e.g. "bitmap50+codebook4", "bitmap50+int4:g32"): the
// compressed decode kernels (sparsa/cuda_compressed.h) timed like the other patterns, on random
// weights made directly in their GPU tiling (random codes, valid metadata, fp16 scales and
// codebooks), rotated copies, CUDA-event medians, and a sampled check against a double product
// of the weights decoded on the host from the same tiling.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sparsa::cuda::bench {

struct CompressedTiming {
  int64_t m = 0;
  // Session 19: m > 16 on 2:4 / V:2:M, the codes expanded into a transient fp16 copy and the
  // prefill kernels on it (expand_nm24 + nm24_gemm or expand_vnm + vnm_gemm, as cuda::gemm runs
  // them); else the decode kernels.
  bool prefill = false;
  double time_us = 0, bytes = 0, rel_err = 0;
  // Graph timing (session 7), as `bench gemm` times the sparse kernels (bench_timing.h): 20 calls
  // over the rotated weight copies captured into one CUDA graph, each writing its own Y, median
  // per call; graph_bad: outputs of one replay that differ from the direct call's (0 expected).
  double graph_time_us = 0;
  int64_t graph_bad = 0;
  // The same record timed and checked again in the same process: "pdl=0" (the default kernels
  // launched without programmatic dependent launch) and each SPARSA_COMPRESSED_AB variant
  // ("variant=N"); same_bits: its direct call's Y equals the default's bit for bit.
  struct Variant {
    std::string spec;
    double time_us = 0, graph_time_us = 0, rel_err = 0;
    int64_t graph_bad = 0;
    bool same_bits = false;
  };
  std::vector<Variant> ab;
};

// Whether a --patterns entry names a codec ("PATTERN+CODEC") or a bitmap ("bitmap50").
bool is_compressed_pattern(const std::string& name);
// The canonical name ("2:4+codebook4"); throws sparsa::Error on a pattern or codec the
// compressed kernels do not run.
std::string compressed_pattern_name(const std::string& name);

// Times the decode path for every m <= 16 of `ms`, per call and as a graph. x: fp16 [>= max m,
// k] on the device; y: fp16 [>= max m, n]. bytes: the weights' compressed bytes + X + Y.
// sweep_ctas: also print the times at 1-4 CTAs per SM (tuning).
std::vector<CompressedTiming> time_compressed(const std::string& name, int64_t n, int64_t k,
                                              const std::vector<int64_t>& ms, const void* x,
                                              void* y, cudaStream_t stream, int warmup, int repeats,
                                              size_t l2_bytes, uint64_t seed,
                                              bool sweep_ctas = false, double prefill_warm_ms = 0);

}  // namespace sparsa::cuda::bench
