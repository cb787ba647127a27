// Decode path over compressed weights, m = 1..16 (sparsa/cuda_compressed.h): the structure of
// sparse_decode.cu (stream-K over resident CTAs, a per-warp cp.async ring of K chunks, X of
// 2:4 riding in the same ring, V:2:M's gathered X prefetched two units ahead, last-CTA
// reduction of shared row groups) with its 16-byte fp16 A-fragment loads replaced by 4-byte
// (4-bit codes) or 8-byte (int8) code words per lane and k-step, decoded to fp16 A fragments
// in registers right before each mma.sp:
//   int4       a = lop3(w >> 4r, 0x000f000f, 0x64006400) = (1024 + u) as half2;
//              (a - offset) * scale: HSUB2 (exact) + HMUL2
//   int8       a = prmt(w, 0x64646464) = (1024 + u) as half2; the same HSUB2 + HMUL2
//   codebook4  per row, 4 codes -> 4 low and 4 high bytes by two-level byte permutes of the
//              row's codebook held in 8 registers (16 entries: prmt picks among 8 bytes by
//              the code's low 3 bits, a third prmt by its top bit), then 2 prmt to interleave.
// Nothing decoded is stored: the bytes read are the codes, metadata, scales and codebooks.
//
// Versions (H100, numbers in docs/kernels-gpu.md):
//   v1  8-step chunks, codes/metadata/scales in separate arrays: 2:4+codebook4 m=1 28672x8192
//       49.4 us = 1.80 TB/s; int8 2.43 TB/s. Contiguous per-unit blocks: no change (47.9 us);
//       a CTA sweep (1-3 per SM) is flat. Suspected instruction overhead: ~200 of the ~360
//       instructions per warp and chunk were not decode or MMA (issue address math, X
//       zero-fill copies for rows >= m, per-k-step scale loads).
//   v2  this file: X rows >= m zeroed once and never copied, incremental source pointers,
//       scale pairs loaded once per chunk for groups of 128 (kSpc = 1), largest carveout:
//       codebook4 46.2 us (3.69x cuBLAS, 0.64 of the copy rate), int4 42.0 us, int8 59.8 us
//       (0.84). ncu: latency-bound (0.48 issue/scheduler, ~30% of stalls at the CTA barrier);
//       next: 16-step chunks for 4-bit codes, warp-private mbarrier rings.
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/mma_sp.cuh"
#include "sparsa/cuda_compressed.h"
#include "sparsa/error.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kChunkCols = 256;          // virtual K per chunk (8 k-steps of 32)
constexpr int kStride = kChunkCols + 8;  // smem row stride of X in halves (+16 B)
constexpr int kStages = 4;               // chunks per warp in the cp.async ring
constexpr int kMetaBytes = 512;          // metadata per warp and chunk
constexpr int kScaleMax = 256;           // (offset, scale) pairs per warp and chunk, at most

template <CodeType kCode>
struct CodeTraits {
  static constexpr int kWords = kCode == CodeType::Int8 ? 4 : 2;  // uint4 per lane and chunk
  static constexpr int kCodeBytes = kWords * 512;
  static constexpr int kScaleBytes = kCode == CodeType::Codebook4 ? 0 : kScaleMax;
  static constexpr int kSlotBytes = kCodeBytes + kMetaBytes + kScaleBytes;
};

struct Params {
  const unsigned char* tiles;  // [row groups][kchunks][kWarps][slot_bytes]
  int64_t slot_bytes;
  const uint4* books;       // [rows or 1][2 uint4]
  const uint32_t* columns;  // V:2:M
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
};

template <CodeType kCode, bool kVnm, int kWarps, int kNTiles>
constexpr int smem_bytes() {
  constexpr int x_bytes = kNTiles * 8 * kStride * 2;
  return kStages * kWarps * CodeTraits<kCode>::kSlotBytes + (kVnm ? 3 : kStages) * x_bytes;
}

__device__ __forceinline__ int64_t unit_begin(int64_t c, const Params& p) {
  return c * p.units / p.ctas;
}
__device__ __forceinline__ int64_t cta_of(int64_t u, const Params& p) {
  return ((u + 1) * p.ctas - 1) / p.units;
}
__device__ __forceinline__ int64_t slot_of(int64_t c, int64_t g, const Params& p) {
  return 2 * c + (g == unit_begin(c, p) / p.kchunks ? 0 : 1);
}

// 2:4: X chunk kc -> smem via cp.async, rows < m only (the ring's other rows are zeroed once at
// the start and never written); columns past K zero-filled. Thread t copies 16-byte piece
// t + r * kThreads: token piece / 32, columns 8 * (piece % 32).
template <int kThreads, int kTokens>
__device__ __forceinline__ void issue_x_dense(uint32_t xs, const Params& p, int64_t kc) {
  const __half* x = static_cast<const __half*>(p.x);
  constexpr int kPieces = kTokens * (kChunkCols / 8);
#pragma unroll
  for (int r = 0; r < (kPieces + kThreads - 1) / kThreads; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / (kChunkCols / 8), piece = idx % (kChunkCols / 8);
    if (idx >= kPieces || tok >= p.m) break;
    const int64_t col = kc * kChunkCols + piece * 8;
    int bytes = 0;
    const __half* src = x;
    if (col < p.cols) {
      bytes = p.cols - col >= 8 ? 16 : static_cast<int>((p.cols - col) * 2);
      src = x + tok * p.ldx + col;
    }
    cp_async_16(xs + (tok * kStride + piece * 8) * 2, src, bytes);
  }
}

// V:2:M gathered X of one chunk, as pairs (see sparse_decode.cu).
template <int kThreads, int kTokens>
struct Gather {
  static constexpr int kPairs = kTokens * 128 / kThreads;
  uint32_t v[kPairs];
};

template <int kThreads, int kTokens>
__device__ __forceinline__ void gather_load(Gather<kThreads, kTokens>& out, const Params& p,
                                            const uint32_t* columns, int64_t block0) {
  const __half* x = static_cast<const __half*>(p.x);
  static_assert(kThreads % 128 == 0, "one column pair per thread");
  const int q = threadIdx.x % 128;
  const int64_t block = block0 + (q >> 1);
  const uint32_t offsets = __ldg(columns + block) >> (16 * (q & 1));
  const int64_t c0 = block * p.bm + (offsets & 0xff);
  const int64_t c1 = block * p.bm + ((offsets >> 8) & 0xff);
#pragma unroll
  for (int r = 0; r < Gather<kThreads, kTokens>::kPairs; ++r) {
    const int tok = (threadIdx.x + r * kThreads) / 128;
    __half2 pair = __half2half2(__float2half_rn(0.0f));
    if (tok < p.m) {
      const __half* row = x + tok * p.ldx;
      if (c0 < p.cols) pair.x = row[c0];
      if (c1 < p.cols) pair.y = row[c1];
    }
    out.v[r] = *reinterpret_cast<const uint32_t*>(&pair);
  }
}

// Rows >= m are skipped: they stay as zeroed at the start.
template <int kThreads, int kTokens>
__device__ __forceinline__ void gather_store(__half* xs, const Gather<kThreads, kTokens>& in,
                                             int m) {
#pragma unroll
  for (int r = 0; r < Gather<kThreads, kTokens>::kPairs; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / 128, q = idx % 128;
    if (tok < m) *reinterpret_cast<uint32_t*>(xs + tok * kStride + 2 * q) = in.v[r];
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

// A codebook as 4 words of low bytes and 4 of high bytes.
struct Book {
  uint32_t lo[4], hi[4];
};

__device__ __forceinline__ Book load_book(const uint4* books, int64_t row, int book_rows) {
  const uint4* b = books + 2 * row * book_rows;
  const uint4 l = __ldg(b), h = __ldg(b + 1);
  return {{l.x, l.y, l.z, l.w}, {h.x, h.y, h.z, h.w}};
}

// Four codes (sel: nibbles with the top bit cleared, sel2: byte choice by the top bit) -> the
// four entries' low or high bytes.
__device__ __forceinline__ uint32_t lookup(const uint32_t (&t)[4], uint32_t sel, uint32_t sel2) {
  return prmt(prmt(t[0], t[1], sel), prmt(t[2], t[3], sel), sel2);
}

// The A fragment of one k-step from its code word(s).
template <CodeType kCode>
__device__ __forceinline__ void decode_a(uint32_t (&a)[4], uint32_t w0, uint32_t w1,
                                         uint32_t pair_lo_row, uint32_t pair_hi_row, const Book& b0,
                                         const Book& b1) {
  if constexpr (kCode == CodeType::Int4) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const uint32_t x = ((w0 >> (4 * r)) & 0x000f000fu) | 0x64006400u;
      a[r] = dequant(x, (r & 1) ? pair_hi_row : pair_lo_row);
    }
  } else if constexpr (kCode == CodeType::Int8) {
    a[0] = dequant(prmt(w0, 0x64646464u, 0x4140), pair_lo_row);
    a[1] = dequant(prmt(w0, 0x64646464u, 0x4342), pair_hi_row);
    a[2] = dequant(prmt(w1, 0x64646464u, 0x4140), pair_lo_row);
    a[3] = dequant(prmt(w1, 0x64646464u, 0x4342), pair_hi_row);
  } else {
    const uint32_t sel = w0 & 0x77777777u;
    const uint32_t sel2 = 0x32103210u | ((w0 & 0x88888888u) >> 1);
    const uint32_t sel_h = sel >> 16, sel2_h = sel2 >> 16;
    const uint32_t l0 = lookup(b0.lo, sel, sel2), h0 = lookup(b0.hi, sel, sel2);
    const uint32_t l1 = lookup(b1.lo, sel_h, sel2_h), h1 = lookup(b1.hi, sel_h, sel2_h);
    a[0] = prmt(l0, h0, 0x5140);
    a[2] = prmt(l0, h0, 0x7362);
    a[1] = prmt(l1, h1, 0x5140);
    a[3] = prmt(l1, h1, 0x7362);
  }
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

// kSpc: scale pairs per row and chunk when known at compile time (1: groups of 128, the
// default), 0 when read from p.spc.
template <CodeType kCode, bool kVnm, int kWarps, int kNTiles, int kSpc, typename OutT>
__global__ void __launch_bounds__(kWarps * 32) compressed_kernel(const Params p) {
  using Tr = CodeTraits<kCode>;
  constexpr int kThreads = kWarps * 32;
  constexpr int kTokens = kNTiles * 8;
  constexpr int kRows = kWarps * 16;
  constexpr int kXBytes = kTokens * kStride * 2;
  constexpr int kSlot = Tr::kSlotBytes;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_last;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t u_begin = unit_begin(blockIdx.x, p);
  const int64_t n_units = unit_begin(blockIdx.x + 1, p) - u_begin;

  const uint32_t base = smem_addr(smem);
  const uint32_t wring = base + warp * kSlot;  // stage s: + s * kWarps * kSlot
  const uint32_t xbase = base + kStages * kWarps * kSlot;
  const int spc = kSpc > 0 ? kSpc : p.spc;
  const int scale_lanes = spc * 4;  // 16-byte pieces of a warp's scale block

  // X rows >= m are never loaded: zero the X slots once (ordered before their first read by
  // the first iteration's barrier).
  {
    constexpr int kXSlots = kVnm ? 3 : kStages;
    uint4* xz = reinterpret_cast<uint4*>(smem + kStages * kWarps * kSlot);
    for (int j = threadIdx.x; j < kXSlots * kXBytes / 16; j += kThreads)
      xz[j] = make_uint4(0, 0, 0, 0);
  }

  // Units are consecutive in memory: this warp's slot of unit u is at
  // (u * kWarps + warp) * slot_bytes (codes, metadata, scales, contiguous).
  int64_t issue_kc = u_begin % p.kchunks;
  const unsigned char* wsrc = p.tiles + (u_begin * kWarps + warp) * p.slot_bytes;
  const int64_t unit_bytes = kWarps * p.slot_bytes;
  auto issue = [&](int64_t i) {
    if (i < n_units) {
      const int64_t kc = issue_kc;
      if (++issue_kc == p.kchunks) issue_kc = 0;
      const uint4* src = reinterpret_cast<const uint4*>(wsrc) + lane;
      wsrc += unit_bytes;
      const uint32_t slot = wring + static_cast<uint32_t>(i % kStages) * kWarps * kSlot;
#pragma unroll
      for (int s = 0; s <= Tr::kWords; ++s)
        cp_async_16(slot + (s * 32 + lane) * 16, src + s * 32, 16);
      if constexpr (Tr::kScaleBytes > 0) {
        if (lane < scale_lanes)
          cp_async_16(slot + Tr::kCodeBytes + kMetaBytes + lane * 16, src + (Tr::kWords + 1) * 32,
                      16);
      }
      if constexpr (!kVnm)
        issue_x_dense<kThreads, kTokens>(xbase + static_cast<uint32_t>(i % kStages) * kXBytes, p,
                                         kc);
    }
    cp_async_commit();
  };
  auto group_columns = [&](int64_t g) { return p.columns + (g * kRows / p.v) * p.blocks_padded; };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) issue(i);

  auto x_slot = [&](int64_t i) {
    return reinterpret_cast<__half*>(smem + kStages * kWarps * kSlot) + (i % 3) * (kXBytes / 2);
  };
  Gather<kThreads, kTokens> gathered;
  int64_t gather_g = u_begin / p.kchunks, gather_kc = u_begin % p.kchunks;
  auto gather_next = [&]() {
    gather_load<kThreads, kTokens>(gathered, p, group_columns(gather_g), gather_kc * 64);
    if (++gather_kc == p.kchunks) {
      gather_kc = 0;
      ++gather_g;
    }
  };
  if constexpr (kVnm) {
    gather_next();
    gather_store<kThreads, kTokens>(x_slot(0), gathered, p.m);
    if (n_units > 1) gather_next();
  }

  float acc[kNTiles][4] = {};
  const uint32_t lane_off = ((lane & 7) * kStride + (lane >> 3) * 8) * 2;
  const int g8 = lane >> 2, t4 = lane & 3;

  Book book0{}, book1{};
  int64_t book_g = -1;

  int64_t g = u_begin / p.kchunks, kc = u_begin % p.kchunks;
#pragma unroll 1
  for (int64_t i = 0; i < n_units; ++i, ++kc) {
    if (kc == p.kchunks) {
      kc = 0;
      ++g;
    }
    if constexpr (kCode == CodeType::Codebook4) {
      if (g != book_g) {  // a new row group: this lane's two rows' codebooks
        book_g = g;
        const int64_t row = (g * kWarps + warp) * 16 + g8;
        book0 = load_book(p.books, row, p.book_rows);
        book1 = load_book(p.books, row + 8, p.book_rows);
      }
    }
    cp_async_wait<kStages - 2>();
    __syncthreads();
    issue(i + kStages - 1);
    const bool last_of_group = i + 1 == n_units || kc + 1 == p.kchunks;
    uint32_t xs;
    if constexpr (kVnm) {
      if (i + 1 < n_units) gather_store<kThreads, kTokens>(x_slot(i + 1), gathered, p.m);
      if (i + 2 < n_units) gather_next();
      xs = xbase + static_cast<uint32_t>(i % 3) * kXBytes;
    } else {
      xs = xbase + static_cast<uint32_t>(i % kStages) * kXBytes;
    }
    const uint32_t slot = wring + static_cast<uint32_t>(i % kStages) * kWarps * kSlot;
    const uint4 e4 = lds128(slot + Tr::kCodeBytes + lane * 16);
    uint32_t w[Tr::kWords * 4];
#pragma unroll
    for (int j = 0; j < Tr::kWords; ++j) {
      const uint4 q = lds128(slot + (j * 32 + lane) * 16);
      w[4 * j] = q.x;
      w[4 * j + 1] = q.y;
      w[4 * j + 2] = q.z;
      w[4 * j + 3] = q.w;
    }
    const uint32_t sbase = slot + Tr::kCodeBytes + kMetaBytes;
    uint32_t pair_lo = 0, pair_hi = 0;
    if constexpr (Tr::kScaleBytes > 0 && kSpc == 1) {
      pair_lo = lds32(sbase + g8 * 4);
      pair_hi = lds32(sbase + (g8 + 8) * 4);
    }
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      if constexpr (Tr::kScaleBytes > 0 && kSpc != 1) {
        const int q = (s * spc) >> 3;
        pair_lo = lds32(sbase + (g8 * spc + q) * 4);
        pair_hi = lds32(sbase + ((g8 + 8) * spc + q) * 4);
      }
      uint32_t a[4];
      if constexpr (kCode == CodeType::Int8)
        decode_a<kCode>(a, w[2 * s], w[2 * s + 1], pair_lo, pair_hi, book0, book1);
      else
        decode_a<kCode>(a, w[s], 0, pair_lo, pair_hi, book0, book1);
      const uint32_t e = (s >> 1) == 0 ? e4.x : (s >> 1) == 1 ? e4.y : (s >> 1) == 2 ? e4.z : e4.w;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        uint32_t b[4];
        ldmatrix_x4(b, xs + lane_off + (nt * 8 * kStride + s * 32) * 2);
        if (s & 1) {
          mma_sp<F16, 1>(acc[nt], a, b, e);
        } else {
          mma_sp<F16, 0>(acc[nt], a, b, e);
        }
      }
    }
    if (!last_of_group) continue;
    OutT* y = static_cast<OutT*>(p.y);
    const bool whole = u_begin <= g * p.kchunks && (g + 1) * p.kchunks <= u_begin + n_units;
    if (whole) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int tok = nt * 8 + 2 * t4 + (j & 1);
          const int64_t row = (g * kWarps + warp) * 16 + g8 + 8 * (j >> 1);
          if (tok < p.m && row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(acc[nt][j]);
          acc[nt][j] = 0.0f;
        }
      continue;
    }
    const int64_t my_slot =
        2 * static_cast<int64_t>(blockIdx.x) + (g * p.kchunks > u_begin ? 1 : 0);
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int tok = nt * 8 + 2 * t4 + (j & 1);
        const int local = warp * 16 + g8 + 8 * (j >> 1);
        if (tok < p.m) p.partials[(my_slot * 16 + tok) * kRows + local] = acc[nt][j];
        acc[nt][j] = 0.0f;
      }
    __syncthreads();
    const int64_t c_first = cta_of(g * p.kchunks, p), c_last = cta_of((g + 1) * p.kchunks - 1, p);
    if (threadIdx.x == 0) {
      unsigned prev;
      asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;\n"
                   : "=r"(prev)
                   : "l"(p.counters + g)
                   : "memory");
      s_last = prev == static_cast<unsigned>(c_last - c_first);
    }
    __syncthreads();
    if (!s_last) continue;
    const int64_t first_slot = slot_of(c_first, g, p);
    for (int idx = threadIdx.x; idx < p.m * kRows; idx += kThreads) {
      const int tok = idx / kRows, local = idx % kRows;
      float sum = __ldcg(p.partials + (first_slot * 16 + tok) * kRows + local);
      for (int64_t c = c_first + 1; c <= c_last; ++c)
        sum += __ldcg(p.partials + (2 * c * 16 + tok) * kRows + local);
      const int64_t row = g * kRows + local;
      if (row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(sum);
    }
    if (threadIdx.x == 0) p.counters[g] = 0;
  }
  cp_async_wait<0>();
}

template <typename Kernel>
int occupancy(Kernel kernel, int threads, int smem) {
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem) != cudaSuccess)
    return 1;
  return std::max(blocks, 1);
}

// 2:4: 8 warps (128 rows) per CTA, so each X chunk staged in shared memory serves twice the
// (now small) weight bytes; V:2:M: 4 warps (one column set per CTA needs rows <= V = 64).
constexpr int warps_for(bool vnm) { return vnm ? 4 : 8; }

// The last CTA of a row group resets its counter but leaves partials behind, so the counter
// region has one fixed size (64 KB: up to 16384 row groups) for every matrix and m, as in
// sparse_decode.cu: partials of one call never land on the counters of a later call that shares
// the workspace with another matrix.
constexpr size_t kCounterRegion = size_t{64} << 10;
size_t counters_bytes(int64_t row_groups) {
  return std::max(kCounterRegion,
                  static_cast<size_t>(row_groups * sizeof(unsigned) + 255) / 256 * 256);
}
size_t workspace_for(int64_t row_groups, int ctas, int rows) {
  return counters_bytes(row_groups) + static_cast<size_t>(2 * ctas) * 16 * rows * sizeof(float);
}

template <CodeType kCode, bool kVnm, int kNTiles, typename OutT, int kSpc = 0>
struct Kernel {
  static constexpr int kWarps = warps_for(kVnm);
  static constexpr int kSmem = smem_bytes<kCode, kVnm, kWarps, kNTiles>();
  static auto fn() { return compressed_kernel<kCode, kVnm, kWarps, kNTiles, kSpc, OutT>; }
  static cudaError_t prepare() {
    // The largest shared-memory carveout, so that as many CTAs as the occupancy calculation
    // counts on (the stream-K split assumes them all resident) really fit.
    static const cudaError_t e = [] {
      const cudaError_t a =
          cudaFuncSetAttribute(fn(), cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
      return a != cudaSuccess
                 ? a
                 : cudaFuncSetAttribute(fn(), cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    }();
    return e;
  }
  static int resident() {
    static const int r = prepare() == cudaSuccess ? occupancy(fn(), kWarps * 32, kSmem) : 1;
    return r * sm_count();
  }
};

// Resident CTAs of the largest instantiation a (code, pattern, m) can use (f32 output: the
// workspace bound does not depend on the output type beyond registers).
template <CodeType kCode, bool kVnm>
int resident_for(int64_t m) {
  return std::max(m <= 8 ? Kernel<kCode, kVnm, 1, float>::resident()
                         : Kernel<kCode, kVnm, 2, float>::resident(),
                  m <= 8 ? Kernel<kCode, kVnm, 1, __half>::resident()
                         : Kernel<kCode, kVnm, 2, __half>::resident());
}

int resident(CodeType code, bool vnm, int64_t m) {
  switch (code) {
    case CodeType::Int8:
      return vnm ? resident_for<CodeType::Int8, true>(m) : resident_for<CodeType::Int8, false>(m);
    case CodeType::Int4:
      return vnm ? resident_for<CodeType::Int4, true>(m) : resident_for<CodeType::Int4, false>(m);
    case CodeType::Codebook4:
      return vnm ? resident_for<CodeType::Codebook4, true>(m)
                 : resident_for<CodeType::Codebook4, false>(m);
  }
  return sm_count();
}

// CTAs: as requested, else every CTA that fits at once (stream-K over them).
int plan_ctas(int requested, int64_t units, int resident_ctas) {
  const int64_t c = requested > 0 ? requested : resident_ctas;
  return static_cast<int>(std::clamp<int64_t>(c, 1, units));
}

template <CodeType kCode, bool kVnm, int kNTiles, int kSpc>
cudaError_t launch_spc(const Params& p, ElemType y_type, cudaStream_t stream) {
  auto go = [&](auto out) -> cudaError_t {
    using K = Kernel<kCode, kVnm, kNTiles, decltype(out), kSpc>;
    if (cudaError_t e = K::prepare(); e != cudaSuccess) return e;
    K::fn()<<<p.ctas, K::kWarps * 32, K::kSmem, stream>>>(p);
    return cudaGetLastError();
  };
  if (y_type == ElemType::F32) return go(float{});
  if (y_type == ElemType::F16) return go(__half{});
  return cudaErrorInvalidValue;
}

template <CodeType kCode, bool kVnm, int kNTiles>
cudaError_t launch(const Params& p, ElemType y_type, cudaStream_t stream) {
  if (kCode != CodeType::Codebook4 && p.spc == 1)
    return launch_spc<kCode, kVnm, kNTiles, 1>(p, y_type, stream);
  return launch_spc<kCode, kVnm, kNTiles, 0>(p, y_type, stream);
}

template <CodeType kCode>
cudaError_t launch_code(const Params& p, bool vnm, ElemType y_type, cudaStream_t stream) {
  if (vnm)
    return p.m <= 8 ? launch<kCode, true, 1>(p, y_type, stream)
                    : launch<kCode, true, 2>(p, y_type, stream);
  return p.m <= 8 ? launch<kCode, false, 1>(p, y_type, stream)
                  : launch<kCode, false, 2>(p, y_type, stream);
}

bool valid(const CompressedWeights& w) {
  if (w.rows <= 0 || w.cols <= 0 || w.rows_padded % kRowTile != 0 || w.kchunks <= 0) return false;
  if (!w.tiles) return false;
  if (w.code == CodeType::Codebook4) {
    if (!w.books) return false;
  } else if (w.scales_per_chunk != 1 && w.scales_per_chunk != 2 && w.scales_per_chunk != 4) {
    return false;
  }
  if (w.vnm && ((w.v != 64 && w.v != 128) || w.m < 4 || w.m > 256 || !w.columns ||
                w.blocks_padded != w.kchunks * 64))
    return false;
  if (!w.vnm && w.kchunks * kChunkCols < w.cols) return false;
  return true;
}

int64_t row_groups_of(const CompressedWeights& w) {
  return w.rows_padded / (warps_for(w.vnm) * 16);
}

}  // namespace

size_t compressed_workspace_bytes(const CompressedWeights& w, int64_t m, int ctas) {
  const int64_t groups = row_groups_of(w);
  const int c = plan_ctas(ctas, groups * w.kchunks, resident(w.code, w.vnm, m));
  return workspace_for(groups, c, warps_for(w.vnm) * 16);
}

cudaError_t compressed_decode(const CompressedWeights& w, const GemmProblem& pr,
                              cudaStream_t stream) {
  if (!valid(w)) return cudaErrorInvalidValue;
  if (pr.m < 1 || pr.m > kDecodeMaxM || !pr.x || !pr.y) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (pr.y_type != ElemType::F32 && pr.y_type != ElemType::F16) return cudaErrorInvalidValue;
  Params p{};
  p.tiles = static_cast<const unsigned char*>(w.tiles);
  p.spc = w.code == CodeType::Codebook4 ? 0 : w.scales_per_chunk;
  p.slot_bytes = (w.code == CodeType::Int8 ? 4 : 2) * 512 + kMetaBytes + 64 * p.spc;
  p.books = reinterpret_cast<const uint4*>(w.books);
  p.columns = w.columns;
  p.x = pr.x;
  p.ldx = pr.ldx;
  p.m = static_cast<int>(pr.m);
  p.cols = w.cols;
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.rows = w.rows;
  p.kchunks = w.kchunks;
  const int64_t groups = row_groups_of(w);
  p.units = groups * w.kchunks;
  p.ctas = plan_ctas(pr.ctas, p.units, resident(w.code, w.vnm, pr.m));
  p.book_rows = w.per_tensor_book ? 0 : 1;
  p.v = w.vnm ? w.v : 0;
  p.bm = w.m;
  p.blocks_padded = w.blocks_padded;
  const int rows_cta = warps_for(w.vnm) * 16;
  if (!pr.workspace || pr.workspace_bytes < workspace_for(groups, p.ctas, rows_cta))
    return cudaErrorInvalidValue;
  p.counters = static_cast<unsigned*>(pr.workspace);
  p.partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) + counters_bytes(groups));
  switch (w.code) {
    case CodeType::Int8:
      return launch_code<CodeType::Int8>(p, w.vnm, pr.y_type, stream);
    case CodeType::Int4:
      return launch_code<CodeType::Int4>(p, w.vnm, pr.y_type, stream);
    case CodeType::Codebook4:
      return launch_code<CodeType::Codebook4>(p, w.vnm, pr.y_type, stream);
  }
  return cudaErrorInvalidValue;
}

DeviceCompressed upload(const CompressedTiled& t) {
  if (t.warps != warps_for(t.vnm) ||
      static_cast<int64_t>(t.tiles.size()) != t.rows_padded / 16 * t.kchunks * t.slot_bytes())
    fail("upload: compressed tiling [{}, {}] does not match the kernels' layout", t.rows, t.cols);
  DeviceCompressed d;
  auto put = [](DeviceBuffer& buf, const void* data, size_t bytes) {
    if (bytes == 0) return;
    buf = DeviceBuffer(bytes);
    buf.upload(data, bytes);
  };
  put(d.tiles, t.tiles.data(), t.tiles.size());
  put(d.books, t.books.data(), t.books.size());
  put(d.columns, t.columns.data(), t.columns.size() * 4);
  CompressedWeights& w = d.weights;
  w.tiles = d.tiles.data();
  w.books = static_cast<const uint8_t*>(d.books.data());
  w.columns = static_cast<const uint32_t*>(d.columns.data());
  w.rows = t.rows;
  w.cols = t.cols;
  w.rows_padded = t.rows_padded;
  w.kchunks = t.kchunks;
  w.blocks_padded = t.blocks_padded;
  w.vnm = t.vnm;
  w.v = t.v;
  w.m = t.m;
  w.code = t.code;
  w.scales_per_chunk = t.scales_per_chunk;
  w.per_tensor_book = t.per_tensor_book;
  return d;
}

}  // namespace sparsa::cuda
