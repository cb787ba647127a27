// The lossless codec's GPU decoder (sparsa/cuda_rans.h): version-2 rANS exponents + raw sign and
// mantissa bits -> bf16/f16 values, and a GEMV that consumes the values as they are decoded.
//
// One warp per 4096-symbol chunk, lane l owning state l (symbol i of the chunk uses state i % 32),
// so a round decodes 32 consecutive symbols: coalesced raw-bit loads and value stores. Per
// round: a shared-memory table lookup gives symbol, frequency and slot bias; lanes whose state
// fell below 2^16 take the next words of the chunk in lane order (prefix popcount of the ballot).
// Words and raw bits are loaded ahead of use (two 64-word register windows passed round by
// shuffles; raw bits kAhead rounds ahead), so the state chain waits on shared memory and
// shuffles, not on HBM; full chunks take a path without per-value bounds checks (the loop is
// issue-bound: docs/compression.md). A persistent grid (as many CTAs as fit) loads the 16 KB
// table once per CTA, not once per chunk.
// Written from the layout in docs/compression.md (the DietGPU approach, no code taken).
#include <cuda_fp16.h>

#include <algorithm>

#include "sparsa/cuda_rans.h"

namespace sparsa::cuda {
namespace {

constexpr int kWarps = 8;  // per CTA
constexpr int kProbBits = 12;
constexpr uint32_t kLow = 1u << 16;
constexpr uint32_t kFull = 0xffffffffu;

__device__ __forceinline__ void load_table(const uint32_t* global, uint32_t* shared) {
  const uint4* src = reinterpret_cast<const uint4*>(global);
  uint4* dst = reinterpret_cast<uint4*>(shared);
  for (int i = threadIdx.x; i < (1 << kProbBits) / 4; i += blockDim.x) dst[i] = __ldg(src + i);
  __syncthreads();
}

// The raw sign+mantissa field of value i. `raw` points at the chunk's first value (chunks start at
// multiples of 32 values, so at a byte for f16 too); i is chunk-relative; raw_left = bytes from
// `raw` to the array's end; kInside: the caller knows the third byte is inside the array.
template <bool kF16, bool kInside>
__device__ __forceinline__ uint32_t raw_field(const uint8_t* raw, uint32_t i, int64_t raw_left) {
  if (!kF16) return __ldg(raw + i);
  const uint32_t bit = 11 * i, byte = bit >> 3;
  uint32_t v = __ldg(raw + byte) | (uint32_t(__ldg(raw + byte + 1)) << 8);
  if (kInside || byte + 2 < raw_left) v |= uint32_t(__ldg(raw + byte + 2)) << 16;
  return (v >> (bit & 7)) & 0x7ffu;
}

template <bool kF16>
__device__ __forceinline__ uint32_t assemble(uint32_t exponent, uint32_t field) {
  return kF16 ? ((field & 0x400u) << 5) | (exponent << 10) | (field & 0x3ffu)
              : ((field & 0x80u) << 8) | (exponent << 7) | (field & 0x7fu);
}

template <bool kF16>
__device__ __forceinline__ float to_float(uint32_t bits) {
  return kF16 ? __half2float(__ushort_as_half(static_cast<unsigned short>(bits)))
              : __uint_as_float(bits << 16);
}

// Rounds whose raw bits are loaded ahead (a register ring): the loads of round r + kAhead are
// issued before round r decodes, so a miss to HBM does not stall the state chain.
constexpr int kAhead = 8;

// Decodes chunk c with the calling warp; visit(index in the chunk, active, value bits) once per
// round and lane. Returns whether the chunk ended consistently (warp-uniform).
// Words come from two 64-word windows held in registers (lane l: words 2l, 2l + 1 of each) and
// are handed to the lanes that need them by shuffles; a round takes at most 32 words, so the
// next word is always inside the two windows, and the window after them is loaded as soon as
// the first one is used up.
// kFast: a full chunk whose raw bits read ahead stay inside the array (every chunk but the
// last ones): no per-value bounds checks.
template <bool kF16, bool kFast, typename Visit>
__device__ __forceinline__ bool decode_chunk(const LosslessWeights& w, const uint32_t* table,
                                             int64_t c, int lane, int64_t raw_bytes,
                                             Visit&& visit) {
  const uint64_t begin = w.chunk_word[c];
  const uint64_t nwords = w.chunk_word[c + 1] - begin;
  if (nwords < 64 || nwords > 0xffffffffull) return false;
  const uint16_t* words = w.words + begin;
  const uint32_t n32 = static_cast<uint32_t>(nwords);
  auto window = [&](uint32_t base) {  // words base + 2 lane, base + 2 lane + 1 (0 past the end)
    const uint32_t i = base + 2 * lane;
    return (i < n32 ? uint32_t(__ldg(words + i)) : 0u) |
           (i + 1 < n32 ? uint32_t(__ldg(words + i + 1)) << 16 : 0u);
  };
  uint32_t x = window(0);  // the lane's initial state
  uint32_t base = 64;      // word index of win0's first word
  uint32_t win0 = window(64), win1 = window(128);
  uint32_t pos = 64;
  const int64_t a = c * w.chunk_symbols;
  const int len =
      kFast ? w.chunk_symbols : static_cast<int>(min(int64_t{w.chunk_symbols}, w.count - a));
  const uint32_t lower = (1u << lane) - 1;
  const int64_t raw_start = kF16 ? a / 8 * 11 : a;
  const uint8_t* raw = w.sign_mantissa + raw_start;
  const int64_t raw_left = raw_bytes - raw_start;
  auto field_at = [&](int idx) {
    if (kFast) return raw_field<kF16, true>(raw, idx, raw_left);
    return idx < len ? raw_field<kF16, false>(raw, idx, raw_left) : 0u;
  };
  uint32_t ring[kAhead];
#pragma unroll
  for (int j = 0; j < kAhead; ++j) ring[j] = field_at(32 * j + lane);
  for (int r0 = 0; r0 < len; r0 += 32 * kAhead) {
#pragma unroll
    for (int j = 0; j < kAhead; ++j) {
      const int idx = r0 + 32 * j + lane;
      if (!kFast && r0 + 32 * j >= len) break;  // warp-uniform
      const uint32_t field = ring[j];
      ring[j] = field_at(idx + 32 * kAhead);
      const bool active = kFast || idx < len;
      uint32_t symbol = 0;
      bool need = false;
      if (active) {
        const uint32_t e = table[x & ((1u << kProbBits) - 1)];
        symbol = e & 0xffu;
        x = (((e >> 8) & 0xfffu) + 1) * (x >> kProbBits) + (e >> 20);
        need = x < kLow;
      }
      const uint32_t ballot = __ballot_sync(kFull, need);
      const uint32_t k = pos - base + __popc(ballot & lower);  // < 128 for a needing lane
      const uint32_t from = (k >> 1) & 31;
      const uint32_t w0 = __shfl_sync(kFull, win0, from), w1 = __shfl_sync(kFull, win1, from);
      if (need) x = (x << 16) | (((k < 64 ? w0 : w1) >> (16 * (k & 1))) & 0xffffu);
      pos += __popc(ballot);
      if (pos - base >= 64) {  // win0 used up: slide by one window
        base += 64;
        win0 = win1;
        win1 = window(base + 64);
      }
      visit(idx, active, assemble<kF16>(symbol, field));
    }
  }
  // Reads past the chunk's end took zeros: caught by the word count (and the final states).
  return __all_sync(kFull, x == kLow) && pos == n32;
}

// A full chunk whose read-ahead (kAhead rounds past its end, plus f16's third byte) stays
// inside the array, and whose length is a whole number of unrolled steps.
__device__ __forceinline__ bool fast_chunk(const LosslessWeights& w, int64_t c) {
  return w.chunk_symbols % (32 * kAhead) == 0 && (c + 1) * w.chunk_symbols + 32 * kAhead < w.count;
}

template <bool kF16>
__global__ void __launch_bounds__(32 * kWarps)
    decode_kernel(LosslessWeights w, uint16_t* out, int* error) {
  __shared__ __align__(16) uint32_t table[1 << kProbBits];
  load_table(w.table, table);
  const int lane = threadIdx.x & 31;
  const int64_t raw_bytes = kF16 ? (11 * w.count + 7) / 8 : w.count;
  for (int64_t c = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32; c < w.chunks;
       c += int64_t{gridDim.x} * kWarps) {
    uint16_t* dst = out + c * w.chunk_symbols;
    auto store = [&](int idx, bool active, uint32_t bits) {
      if (active) dst[idx] = static_cast<uint16_t>(bits);
    };
    const bool ok = fast_chunk(w, c)
                        ? decode_chunk<kF16, true>(w, table, c, lane, raw_bytes, store)
                        : decode_chunk<kF16, false>(w, table, c, lane, raw_bytes, store);
    if (!ok && lane == 0 && error) atomicMax(error, static_cast<int>(min(c + 1, int64_t{1} << 30)));
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// A round of 32 values lies in one row (cols % 32 == 0, chunks start at multiples of 32): the
// warp keeps per-lane partial sums and flushes them when the row changes and at the chunk's end.
template <bool kF16, bool kAtomic>
__global__ void __launch_bounds__(32 * kWarps)
    gemv_kernel(LosslessWeights w, const uint16_t* xv, float* y, int* error) {
  __shared__ __align__(16) uint32_t table[1 << kProbBits];
  load_table(w.table, table);
  const int lane = threadIdx.x & 31;
  const int64_t raw_bytes = kF16 ? (11 * w.count + 7) / 8 : w.count;
  for (int64_t c = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32; c < w.chunks;
       c += int64_t{gridDim.x} * kWarps) {
    const int64_t a = c * w.chunk_symbols;
    int64_t row = a / w.cols;
    int64_t col0 = a - row * w.cols;  // column of the round's lane 0
    float acc = 0.0f;
    auto flush = [&]() {
      const float s = warp_sum(acc);
      if (lane == 0) {
        if (kAtomic)
          atomicAdd(y + row, s);
        else
          y[row] = s;
      }
      acc = 0.0f;
    };
    auto multiply = [&](int idx, bool active, uint32_t bits) {
      if (active) acc += to_float<kF16>(bits) * to_float<kF16>(__ldg(xv + col0 + lane));
      col0 += 32;
      if (col0 == w.cols) {
        flush();
        col0 = 0;
        ++row;
      }
    };
    const bool ok = fast_chunk(w, c)
                        ? decode_chunk<kF16, true>(w, table, c, lane, raw_bytes, multiply)
                        : decode_chunk<kF16, false>(w, table, c, lane, raw_bytes, multiply);
    if (col0 != 0) flush();  // a row continued in the next chunk (atomic mode only)
    if (!ok && lane == 0 && error) atomicMax(error, static_cast<int>(min(c + 1, int64_t{1} << 30)));
  }
}

// As many CTAs as fit at once (at most one per kWarps chunks).
template <typename Kernel>
int grid_size(Kernel kernel, int64_t chunks) {
  int device = 0, sms = 0, per_sm = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * kWarps, 0) != cudaSuccess)
    return 0;
  const int64_t need = (chunks + kWarps - 1) / kWarps;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(need, int64_t{sms} * per_sm)));
}

bool valid(const LosslessWeights& w) {
  return w.prob_bits == kProbBits && w.chunk_symbols > 0 && w.chunk_symbols % 32 == 0 &&
         (w.type == ElemType::BF16 || w.type == ElemType::F16) && w.count >= 0 &&
         w.chunks == (w.count + w.chunk_symbols - 1) / w.chunk_symbols;
}

}  // namespace

cudaError_t lossless_decode(const LosslessWeights& w, uint16_t* out, int* error,
                            cudaStream_t stream) {
  if (!valid(w)) return cudaErrorInvalidValue;
  if (w.chunks == 0) return cudaSuccess;
  if (w.type == ElemType::F16) {
    const int grid = grid_size(decode_kernel<true>, w.chunks);
    if (!grid) return cudaGetLastError();
    decode_kernel<true><<<grid, 32 * kWarps, 0, stream>>>(w, out, error);
  } else {
    const int grid = grid_size(decode_kernel<false>, w.chunks);
    if (!grid) return cudaGetLastError();
    decode_kernel<false><<<grid, 32 * kWarps, 0, stream>>>(w, out, error);
  }
  return cudaGetLastError();
}

cudaError_t lossless_gemv(const LosslessWeights& w, const uint16_t* x, float* y, int* error,
                          cudaStream_t stream) {
  if (!valid(w) || w.rows <= 0 || w.cols <= 0 || w.cols % 32 != 0 || w.rows * w.cols != w.count)
    return cudaErrorInvalidValue;
  // Rows split across chunks unless every chunk holds whole rows.
  const bool atomic = w.chunk_symbols % w.cols != 0;
  if (atomic) {
    const cudaError_t e = cudaMemsetAsync(y, 0, sizeof(float) * w.rows, stream);
    if (e != cudaSuccess) return e;
  }
  auto launch = [&](auto kernel) {
    const int grid = grid_size(kernel, w.chunks);
    if (!grid) return cudaGetLastError();
    kernel<<<grid, 32 * kWarps, 0, stream>>>(w, x, y, error);
    return cudaGetLastError();
  };
  if (w.type == ElemType::F16)
    return atomic ? launch(gemv_kernel<true, true>) : launch(gemv_kernel<true, false>);
  return atomic ? launch(gemv_kernel<false, true>) : launch(gemv_kernel<false, false>);
}

}  // namespace sparsa::cuda
