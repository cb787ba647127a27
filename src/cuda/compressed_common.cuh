// Device pieces shared by the compressed decode kernels (compressed_decode.cu: 2:4 and V:2:M;
// bitmap_decode.cu: bitmap): launch parameters (the stream-K split and the end of a row group
// come from split_fixup.cuh), X staging and code helpers.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/mma_sp.cuh"
#include "cuda/split_fixup.cuh"
#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda::detail {

struct CompressedParams {
  const unsigned char* tiles;  // [row groups][kchunks][warps][slot_bytes] (bitmap: variable)
  int64_t slot_bytes;
  const uint4* books;       // [rows or 1][2 uint4]
  const uint32_t* columns;  // V:2:M
  const uint32_t* offsets;  // bitmap: slot starts in 16-byte units, [units * warps + 1]
  const void* x;
  int64_t ldx;
  int m;
  int64_t cols;
  void* y;
  int64_t ldy;
  int64_t rows;
  int64_t kchunks;
  int64_t units;
  int ctas;
  int spc;        // scale pairs per row and chunk
  int book_rows;  // 1: a codebook per row, 0: one for the tensor
  int v, bm;
  int64_t blocks_padded;
  float* partials;
  unsigned* counters;
  uint32_t one = 1;  // 1, opaque to the compiler (codebook4 table path: shift multipliers)
};

// X chunk kc (kCols columns) -> shared memory rows of kRowBytes via cp.async, rows < m only
// (rows >= m are never read: their ldmatrix lanes point at a zero row); columns past K
// zero-filled. Thread t copies 16-byte pieces t + r * kThreads.
template <int kThreads, int kCols, int kRowBytes>
__device__ __forceinline__ void issue_x_dense(uint32_t xs, const CompressedParams& p, int64_t kc) {
  const __half* x = static_cast<const __half*>(p.x);
  constexpr int kRowPieces = kCols / 8;
  constexpr int kPieces = 16 * kRowPieces;
#pragma unroll
  for (int r = 0; r < (kPieces + kThreads - 1) / kThreads; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / kRowPieces, piece = idx % kRowPieces;
    if (idx >= kPieces || tok >= p.m) break;
    const int64_t col = kc * kCols + piece * 8;
    int bytes = 0;
    const __half* src = x;
    if (col < p.cols) {
      bytes = p.cols - col >= 8 ? 16 : static_cast<int>((p.cols - col) * 2);
      src = x + tok * p.ldx + col;
    }
    cp_async_16(xs + tok * kRowBytes + piece * 16, src, bytes);
  }
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(uint32_t b) { return *reinterpret_cast<__half2*>(&b); }

// (x - offset) * scale for x = 1024 + u as half2; pair = (offset, scale).
__device__ __forceinline__ uint32_t dequant(uint32_t x, uint32_t pair) {
  const __half2 off = bits_h2(prmt(pair, 0, 0x1010)), sc = bits_h2(prmt(pair, 0, 0x3232));
  return h2_bits(__hmul2(__hsub2(bits_h2(x), off), sc));
}

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "r"(addr));
  return r;
}
__device__ __forceinline__ uint32_t lds32(uint32_t addr) {
  uint32_t r;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(r) : "r"(addr));
  return r;
}

// The fix-up of the row group a CTA's range ends in, without round trips after its last chunk
// (session 6; the 2:4 kernels' kEndFix variant, m <= 8). flush_row_group's last CTA stores its
// partial sums, counts its arrival with an atomic, waits for the result, then loads the other
// CTAs' partials: two L2 round trips after the kernel's last chunk. Here thread 0 reads the
// group's arrival counter (acquire) one chunk before the end; if every other CTA of the group has
// arrived, warp 0 copies their (final) partials into a free ring slot with cp.async while the
// last chunk is decoded, and the flush adds them to this CTA's accumulators in CTA order — the
// same additions in the same order as flush_row_group's reduction, so the same bits.
struct EndFix {
  int g = -1;  // the row group the range ends in, if split over CTAs; else -1
  int c_first = 0, n = 0;  // its CTAs: c_first .. c_first + n - 1
  int first_slot = 0;      // c_first's partial slot for g
  static constexpr int kMaxCtas = 4;  // CTAs per group it handles (the partials' scratch)
};

// Computed once per CTA, before the loop (64-bit divisions).
template <typename P>
__device__ __forceinline__ EndFix end_fix_plan(const P& p, int64_t u_begin, int64_t n_units) {
  EndFix e;
  const int64_t g = (u_begin + n_units - 1) / p.kchunks;
  const bool whole = u_begin <= g * p.kchunks && (g + 1) * p.kchunks <= u_begin + n_units;
  if (whole || n_units < 2) return e;
  const int64_t c_first = cta_of(g * p.kchunks, p), c_last = cta_of((g + 1) * p.kchunks - 1, p);
  if (c_last - c_first + 1 > EndFix::kMaxCtas) return e;
  e.g = static_cast<int>(g);
  e.c_first = static_cast<int>(c_first);
  e.n = static_cast<int>(c_last - c_first + 1);
  e.first_slot = static_cast<int>(slot_of(c_first, g, p));
  return e;
}

__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* a) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(a) : "memory");
  return v;
}

// Warp 0, at the top of the last chunk: if thread 0's `seen` (the counter of e.g one chunk
// earlier) says every other CTA of e.g has arrived, copy their (final) partials (count = m *
// kRows floats each) into scratch + k * count * 4 for CTA c_first + k. Thread 0 publishes the
// choice in *s_fast, read by every thread after the flush's barrier.
template <int kRows, typename P>
__device__ __forceinline__ void end_fix_prefetch(const P& p, const EndFix& e, unsigned seen,
                                                 uint32_t scratch, int* s_fast) {
  const int lane = threadIdx.x % 32;
  int fast = threadIdx.x == 0 && seen == static_cast<unsigned>(e.n - 1);
  __syncwarp();  // thread 0's acquire before the other lanes' reads
  fast = __shfl_sync(0xffffffffu, fast, 0);
  if (threadIdx.x == 0) *s_fast = fast;
  if (!fast) return;
  const int pieces = p.m * kRows / 4;  // 16-byte pieces of one CTA's partials
  for (int k = 0; k < e.n; ++k) {
    const int c = e.c_first + k;
    if (c == static_cast<int>(blockIdx.x)) continue;
    const int64_t slot = k == 0 ? e.first_slot : 2 * c;
    const float* src = p.partials + slot * 16 * kRows;
    const uint32_t dst = scratch + static_cast<uint32_t>(k * pieces * 16);
    for (int q = lane; q < pieces; q += 32) cp_async_16(dst + q * 16, src + q * 4, 16);
  }
  cp_async_commit();
}

// The flush of e.g when *s_fast (this CTA is its last): this CTA's accumulators go to its place
// in the scratch, then each thread sums elements idx = threadIdx.x + r * kThreads over the CTAs
// in order and writes Y; the counter is reset for the next call (every other CTA has arrived).
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ void end_fix_flush(const P& p, float (&acc)[kNTiles][4],
                                              const EndFix& e, uint32_t scratch) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kRows = kWarps * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
  const int count = p.m * kRows;
  float* sc = reinterpret_cast<float*>(__cvta_shared_to_generic(scratch));
  float* own = sc + (static_cast<int>(blockIdx.x) - e.c_first) * count;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tok = nt * 8 + 2 * t4 + (j & 1);
      const int local = warp * 16 + g8 + 8 * (j >> 1);
      if (tok < p.m) own[tok * kRows + local] = acc[nt][j];
      acc[nt][j] = 0.0f;
    }
  cp_async_wait<0>();  // warp 0's copies of the other CTAs' partials
  __syncthreads();
  OutT* y = static_cast<OutT*>(p.y);
  for (int idx = threadIdx.x; idx < count; idx += kThreads) {
    float sum = sc[idx];
    for (int k = 1; k < e.n; ++k) sum += sc[k * count + idx];
    const int tok = idx / kRows, local = idx % kRows;
    const int64_t row = static_cast<int64_t>(e.g) * kRows + local;
    if (row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(sum);
  }
  if (threadIdx.x == 0) p.counters[e.g] = 0;
}

// Dense f16 MMA m16n8k16 (f32 accumulators): the bitmap kernels' product after expansion.
__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                        uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace sparsa::cuda::detail
