// Device-side random data for the GEMM benchmark: fp16 values (uniform in [-1, 1], never 0)
// and valid 2:4 metadata words, generated in place so that large weight sets cost no host
// time or transfers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace sparsa::cuda::bench {

cudaError_t fill_random_f16(uint16_t* data, size_t count, uint64_t seed, cudaStream_t stream);
// Every nibble one of the six idx0 < idx1 pairs.
cudaError_t fill_random_meta(uint32_t* data, size_t count, uint64_t seed, cudaStream_t stream);

}  // namespace sparsa::cuda::bench
