// Decode path over bitmap matrices, m = 1..16 (sparsa/cuda_compressed.h, CompressedTiled::bitmap):
// unstructured sparsity cannot use the sparse tensor cores, so each lane expands its kept values
// into the A fragments of dense m16n8k16 MMAs (fp16 values as they are; int8 codes through the
// 1024 + u half trick, (x - offset) * scale) and the bytes read are the masks, the kept values
// and the int8 pairs. The work split is compressed_decode.cu's: stream-K over resident CTAs of
// (row group, 256-column chunk) units, a per-warp cp.async ring (here of variable-size slots:
// `offsets` gives each warp's range), X chunks staged through the same ring, last-CTA reduction
// of shared row groups (compressed_common.cuh).
//
// Expansion (the positions expansion; int8 / int4 / codebook4 take bitmap_lut.cuh's by default):
// a lane's kept values of a step sit in its own run of the slot, the slot's values step-major
// (session 21: the step's runs of lanes 0..31 together, so that lanes' loads at a position meet
// fewer bank conflicts than with one run per lane and chunk; starts from one warp scan of the
// lanes' step counts); per position one predicated shared-memory load and a predicated index
// increment. 4-bit codes (int4, codebook4) stay packed: the run
// is counted in bits, and each step's codes come into a 64-bit register window (two 8-byte
// loads; a kept position takes the low nibble and shifts the window: session 15). Int8 / int4:
// per row and 32-column step the pair of the group at the step's start and of the next one, and
// the column where the next begins (groups of 128: from the row's three pairs; 32 / 64: from
// the row's step word, an index into the slot's pair list); each position picks one of the two
// by comparing its column (compile-time offset) with that column. Codebook4 (session 5): each
// warp keeps its 16 rows' codebooks (or the tensor's, repeated) in a 512-byte shared-memory
// table, refilled when the warp's row group changes; a kept code is one more ld.shared.u16.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <type_traits>

#include "cuda/bitmap_lut.cuh"
#include "cuda/compressed_common.cuh"
#include "cuda/compressed_internal.h"
#include "cuda/mma_sp.cuh"
#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda {
namespace {

using namespace detail;
using Params = CompressedParams;

constexpr int kWarps = kBitmapWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kCols = kBitmapChunkCols;
constexpr int kRowBytes = (kCols + 8) * 2;  // X row, +16 B: no bank conflicts
constexpr int kStages = 3;

constexpr int kTableBytes = 512;    // codebook4 (positions expansion): a warp's 16 rows x 16 halves
constexpr int kLutBytes = 256 * 4;  // LUT expansion: bitmap_lut.cuh's selectors per mask byte

// Which expansion a kernel runs (SPARSA_BITMAP_EXPAND=positions|lut|default at first use,
// detail::set_bitmap_expansion; compressed_internal.h).
int& expansion_setting() {
  static int v = [] {
    const char* env = std::getenv("SPARSA_BITMAP_EXPAND");
    const std::string_view v = env ? env : "";
    return v == "positions" ? kBitmapPositions : v == "lut" ? kBitmapLut : kBitmapDefault;
  }();
  return v;
}

// The default: the LUT for codes, the positions expansion for fp16 values (same-run A/B on the
// H100: the LUT 2-6% slower for fp16, whose per-position work is one load and not integer work;
// docs/compression.md, "Session 21").
bool takes_lut(CodeType code, int expansion) {
  return expansion == kBitmapLut || (expansion == kBitmapDefault && code != CodeType::F16);
}

int smem_bytes(int64_t slot_bytes, int m, CodeType code, bool lut) {
  return static_cast<int>(kStages * kWarps * slot_bytes + kRowBytes * (1 + kStages * m) +
                          (lut                           ? kLutBytes
                           : code == CodeType::Codebook4 ? kWarps * kTableBytes
                                                         : 0));
}

constexpr int value_bits(CodeType code) {
  return code == CodeType::F16 ? 16 : code == CodeType::Int8 ? 8 : 4;
}

__device__ __forceinline__ uint32_t lds_u8(uint32_t addr) {
  uint32_t r;
  asm volatile("ld.shared.u8 %0, [%1];\n" : "=r"(r) : "r"(addr));
  return r;
}
__device__ __forceinline__ uint32_t lds_u16(uint32_t addr) {
  uint32_t r;
  asm volatile("ld.shared.u16 %0, [%1];\n" : "=r"(r) : "r"(addr));
  return r;
}

__device__ __forceinline__ uint2 lds64(uint32_t addr) {
  uint2 r;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(r.x), "=r"(r.y) : "r"(addr));
  return r;
}

// 4-bit codes (session 15): the next 16 nibbles from bit address `va` (8 x a byte address, + 4
// for a high nibble) as a 64-bit window {lo, hi}, read with two 8-byte loads. A step's kept codes
// (at most 16) are taken from the window by shifts instead of one shared-memory load each. May
// read up to 15 bytes past the run: the ring is followed by the zero X row, so the reads stay in
// the CTA's shared memory, and nibbles past the run are never used.
__device__ __forceinline__ void nibble_window(uint32_t va, uint32_t& lo, uint32_t& hi) {
  const uint32_t a8 = (va >> 3) & ~7u;
  const uint2 p0 = lds64(a8), p1 = lds64(a8 + 8);
  const uint32_t sh = va - 8 * a8;  // 0..60, a multiple of 4
  const uint64_t x0 = (static_cast<uint64_t>(p0.y) << 32) | p0.x;
  const uint64_t x1 = (static_cast<uint64_t>(p1.y) << 32) | p1.x;
  const uint64_t w = sh == 0 ? x0 : (x0 >> sh) | (x1 << (64 - sh));
  lo = static_cast<uint32_t>(w);
  hi = static_cast<uint32_t>(w >> 32);
}

// The fp16 value or u8 code at shared address `va` (4-bit codes: nibble_window).
template <CodeType kCode>
__device__ __forceinline__ uint32_t lds_value(uint32_t va) {
  static_assert(value_bits(kCode) != 4, "4-bit codes are read through nibble_window");
  if constexpr (value_bits(kCode) == 16)
    return lds_u16(va);
  else
    return lds_u8(va);
}

// Row state of one int8 step: pairs before / from the next group's first column `next`
// (relative to this lane's column 2t of the step).
struct StepPairs {
  uint32_t a, b;
  int next;
};

__device__ __forceinline__ StepPairs step_pairs(const uint4& q, int lo, int t2) {
  const int b1 = static_cast<int>(q.w & 0xffff), b2 = static_cast<int>(q.w >> 16);
  const int gi = (lo >= b1) + (lo >= b2);
  StepPairs s;
  s.a = gi == 0 ? q.x : gi == 1 ? q.y : q.z;
  s.b = gi == 0 ? q.y : q.z;
  s.next = (b1 > lo ? b1 : b2) - lo - t2;
  return s;
}

// Step pairs from the row's step word (groups of 32 / 64): pairs at index w & 0x3ff and the next
// one of the slot's pair list `pl`, the second from column w >> 10 of the step.
__device__ __forceinline__ StepPairs step_word_pairs(uint32_t w, uint32_t pl, int t2) {
  const uint32_t at = pl + (w & 0x3ffu) * 4;
  StepPairs s;
  s.a = lds32(at);
  s.b = lds32(at + 4);
  s.next = static_cast<int>((w >> 10) & 0x3fu) - t2;
  return s;
}

// Step-major value runs (session 21): where lane L's run of step s starts (in values), for the 8
// steps as 16-bit fields, 2 steps to a word: every lane's values of the steps before plus lanes
// 0..L-1's of step s (a step holds at most 16 values a lane, so a step's lane prefix is <= 512 and
// a start <= 4096). One warp scan of the step counts; the steps' totals (lane 31's inclusive sums)
// summed over the steps before.
struct StepStarts {
  uint32_t start[4];  // steps 2j, 2j + 1 in bits 0-15 / 16-31 of start[j]
  uint32_t total;     // values of the whole slot
  __device__ __forceinline__ uint32_t of(int s) const {
    return (s & 1) ? start[s / 2] >> 16 : start[s / 2] & 0xffffu;
  }
};

__device__ __forceinline__ StepStarts step_starts(const uint4& mk, int lane) {
  const uint32_t words[4] = {mk.x, mk.y, mk.z, mk.w};
  uint32_t count[4], incl[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    count[j] = static_cast<uint32_t>(__popc(words[j] & 0xffffu)) |
               static_cast<uint32_t>(__popc(words[j] >> 16)) << 16;
    incl[j] = count[j];
  }
#pragma unroll
  for (int o = 1; o < 32; o <<= 1)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t v = __shfl_up_sync(0xffffffffu, incl[j], o);
      if (lane >= o) incl[j] += v;
    }
  StepStarts r;
  uint32_t base = 0;  // values of the steps before
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t tot = __shfl_sync(0xffffffffu, incl[j], 31);
    const uint32_t lo = tot & 0xffffu, hi = tot >> 16;
    r.start[j] = incl[j] - count[j] + (base | (base + lo) << 16);
    base += lo + hi;
  }
  r.total = base;
  return r;
}

// Session 21: one step's 8 A registers by the LUT expansion (bitmap_lut.cuh) from its 16-bit
// mask `bits`; va: the lane's run of this step (bytes, or bits for 4-bit codes).
template <CodeType kCode>
__device__ __forceinline__ void expand_step_lut(uint32_t (&a)[8], uint32_t bits, uint32_t va,
                                                uint32_t lut, const StepPairs& s0,
                                                const StepPairs& s1, const Book& b0, const Book& b1,
                                                const Cb4Consts& k) {
  const uint32_t m[2] = {bits & 0xffu, (bits >> 8) & 0xffu};
  const uint32_t p0 = static_cast<uint32_t>(__popc(m[0]));
  if constexpr (kCode == CodeType::F16) {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      uint32_t w[4], aq[4];
      halves8(q == 0 ? va : va + 2 * p0, w);
      expand_f16(aq, w, m[q], lds32(lut + 4 * m[q]));
#pragma unroll
      for (int j = 0; j < 4; ++j) a[4 * q + j] = aq[j];
    }
    return;
  }
  uint32_t src[2][2];
  if constexpr (kCode == CodeType::Int8) {
    int8_windows(va, p0, src);
  } else {
    uint32_t w[2];
    nibble_windows(va, p0, w);
    split_nibbles(w[0], src[0]);
    split_nibbles(w[1], src[1]);
  }
  RowPairs r0{}, r1{};
  if constexpr (kCode != CodeType::Codebook4) {
    r0 = row_pairs(s0.a, s0.b, s0.next);
    r1 = row_pairs(s1.a, s1.b, s1.next);
  }
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    const uint32_t sel = lds32(lut + 4 * m[q]);
    const uint32_t out[2] = {prmt(src[q][0], src[q][1], sel),
                             prmt(src[q][0], src[q][1], sel >> 16)};
    uint32_t aq[4];
    if constexpr (kCode == CodeType::Codebook4)
      expand_book(aq, out, m[q], b0, b1, k);
    else if (q == 0)
      expand_int<0>(aq, out, m[q], r0, r1);
    else
      expand_int<1>(aq, out, m[q], r0, r1);
#pragma unroll
    for (int j = 0; j < 4; ++j) a[4 * q + j] = aq[j];
  }
}

template <CodeType kCode, bool kStepPairs, bool kLut, int kNTiles, typename OutT>
__global__ void __launch_bounds__(kThreads) bitmap_kernel(const Params p) {
  constexpr int kTokens = kNTiles * 8;
  constexpr int kHead = bitmap_head_bytes(kCode);
  constexpr bool kInt = kCode == CodeType::Int8 || kCode == CodeType::Int4;
  constexpr bool kBook = kCode == CodeType::Codebook4;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_last;
  static_assert(kTokens <= 16, "m <= 16");

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t u_begin = unit_begin(blockIdx.x, p);
  const int64_t n_units = unit_begin(blockIdx.x + 1, p) - u_begin;
  const uint32_t slot_cap = static_cast<uint32_t>(p.slot_bytes);

  const uint32_t base = smem_addr(smem);
  const uint32_t wring = base + warp * slot_cap;  // stage s: + s * kWarps * slot_cap
  const uint32_t zrow = base + kStages * kWarps * slot_cap;
  const uint32_t xbase = zrow + kRowBytes;
  const uint32_t x_bytes = static_cast<uint32_t>(p.m) * kRowBytes;

  for (int j = threadIdx.x; j < kRowBytes / 16; j += kThreads)
    reinterpret_cast<uint4*>(smem + kStages * kWarps * slot_cap)[j] = make_uint4(0, 0, 0, 0);

  int64_t issue_kc = u_begin % p.kchunks;
  const uint32_t* offs = p.offsets + u_begin * kWarps + warp;
  auto issue = [&](int64_t i) {
    if (i < n_units) {
      const int64_t kc = issue_kc;
      if (++issue_kc == p.kchunks) issue_kc = 0;
      const uint32_t start = __ldg(offs), end = __ldg(offs + 1);
      offs += kWarps;
      const uint4* src = reinterpret_cast<const uint4*>(p.tiles) + start;
      const uint32_t slot = wring + static_cast<uint32_t>(i % kStages) * kWarps * slot_cap;
      for (uint32_t j = lane; j < end - start; j += 32) cp_async_16(slot + j * 16, src + j, 16);
      issue_x_dense<kThreads, kCols, kRowBytes>(
          xbase + static_cast<uint32_t>(i % kStages) * x_bytes, p, kc);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) issue(i);

  float acc[2][kNTiles][4] = {};
  uint32_t lane_row[kNTiles];
  bool lane_tok[kNTiles];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    const int tok = nt * 8 + (lane & 7);
    lane_tok[nt] = tok < p.m;
    lane_row[nt] = static_cast<uint32_t>(tok) * kRowBytes + (lane >> 3) * 16;
  }
  const uint32_t zlane = zrow + (lane >> 3) * 16;
  const int g8 = lane >> 2, t2 = 2 * (lane & 3);
  // Codebook4: this warp's table, rows g8 and g8 + 8 of it for this lane.
  const uint32_t toff =
      kStages * kWarps * slot_cap + kRowBytes * (1 + kStages * p.m) + warp * kTableBytes;
  const uint32_t trow0 = base + toff + g8 * 32, trow1 = trow0 + 8 * 32;
  int64_t table_g = -1;
  // LUT expansion: the selector table (where the positions path's codebook tables start),
  // written before the loop's first barrier; codebook4's two rows' books in registers.
  const uint32_t lut_off = toff - warp * kTableBytes;
  const uint32_t lut = base + lut_off;
  if constexpr (kLut) {
    for (int j = threadIdx.x; j < 256; j += kThreads)
      reinterpret_cast<uint32_t*>(smem + lut_off)[j] = lut_entry<kCode>(static_cast<uint32_t>(j));
  }
  Book book0{}, book1{};
  const Cb4Consts cb4k{0x80008000u * p.one, 0xffffffffu * p.one, 0, 0, 0};

  int64_t g = u_begin / p.kchunks, kc = u_begin % p.kchunks;
#pragma unroll 1
  for (int64_t i = 0; i < n_units; ++i, ++kc) {
    if (kc == p.kchunks) {
      kc = 0;
      ++g;
    }
    if constexpr (kBook && kLut) {
      if (g != table_g) {
        const int64_t row = p.book_rows ? g * 64 + warp * 16 + g8 : 0;
        book0 = bitmap_book(p.books, row);
        book1 = bitmap_book(p.books, p.book_rows ? row + 8 : 0);
        table_g = g;
      }
    } else if constexpr (kBook) {
      if (g != table_g) {  // 16 rows x 32 bytes: one 16-byte piece per lane
        __syncwarp();
        const int row = lane >> 1;
        const uint4 e =
            __ldg(p.books + (p.book_rows ? (g * 64 + warp * 16 + row) * 2 : 0) + (lane & 1));
        *reinterpret_cast<uint4*>(smem + toff + row * 32 + (lane & 1) * 16) = e;
        __syncwarp();
        table_g = g;
      }
    }
    cp_async_wait<kStages - 2>();
    __syncthreads();
    issue(i + kStages - 1);
    const bool last_of_group = i + 1 == n_units || kc + 1 == p.kchunks;
    const uint32_t xs = xbase + static_cast<uint32_t>(i % kStages) * x_bytes;
    uint32_t xrow[kNTiles];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) xrow[nt] = lane_tok[nt] ? xs + lane_row[nt] : zlane;
    const uint32_t slot = wring + static_cast<uint32_t>(i % kStages) * kWarps * slot_cap;
    const uint4 mk = lds128(slot + lane * 16);
    // Values are step-major: lane L's run of step s starts after every lane's values of the steps
    // before and lanes 0..L-1's of step s.
    const StepStarts starts = step_starts(mk, lane);
    const uint32_t vbase = slot + kHead;
    // A run's start in the units va counts (bytes; bits for 4-bit codes).
    constexpr uint32_t kStep = value_bits(kCode) == 16 ? 2 : value_bits(kCode) == 8 ? 1 : 4;
    const uint32_t va0 = value_bits(kCode) == 4 ? 8 * vbase : vbase;
    uint4 q_lo{}, q_hi{};
    uint32_t pl = 0;  // step pairs: the slot's pair list, after the values (4-byte aligned)
    if constexpr (kInt) {
      q_lo = lds128(slot + 512 + g8 * 16);
      q_hi = lds128(slot + 512 + (g8 + 8) * 16);
      if constexpr (kStepPairs) {
        const uint32_t total = starts.total;
        pl = vbase + ((((total * value_bits(kCode) + 7) >> 3) + 3) & ~3u);
      }
    }
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      const uint32_t word = s / 2 == 0 ? mk.x : s / 2 == 1 ? mk.y : s / 2 == 2 ? mk.z : mk.w;
      const uint32_t bits = (s & 1) ? word >> 16 : word;
      uint32_t va = va0 + starts.of(s) * kStep;
      StepPairs r0{}, r1{};
      if constexpr (kInt && kStepPairs) {
        const uint32_t w_lo = s / 2 == 0   ? q_lo.x
                              : s / 2 == 1 ? q_lo.y
                              : s / 2 == 2 ? q_lo.z
                                           : q_lo.w;
        const uint32_t w_hi = s / 2 == 0   ? q_hi.x
                              : s / 2 == 1 ? q_hi.y
                              : s / 2 == 2 ? q_hi.z
                                           : q_hi.w;
        r0 = step_word_pairs((s & 1) ? w_lo >> 16 : w_lo & 0xffffu, pl, t2);
        r1 = step_word_pairs((s & 1) ? w_hi >> 16 : w_hi & 0xffffu, pl, t2);
      } else if constexpr (kInt) {
        r0 = step_pairs(q_lo, 32 * s, t2);
        r1 = step_pairs(q_hi, 32 * s, t2);
      }
      uint32_t a[8];
      if constexpr (kLut) {
        expand_step_lut<kCode>(a, bits, va, lut, r0, r1, book0, book1, cb4k);
      } else {
        // 4-bit codes: the step's codes in registers (nibble_window), consumed from the low end.
        uint32_t win_lo = 0, win_hi = 0;
        if constexpr (value_bits(kCode) == 4) {
          nibble_window(va, win_lo, win_hi);
        }
#pragma unroll
        for (int reg = 0; reg < 8; ++reg) {  // A registers of the step's two MMAs
          uint32_t v[2];
          uint32_t pr[2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int i = 2 * reg + h;
            const int col = 16 * (i >> 3) + (i & 1) + 8 * ((i >> 2) & 1);  // + 2t
            const bool kept = bits & (1u << i);
            uint32_t code = 0;  // 4-bit codes: from the window's low end
            if constexpr (value_bits(kCode) == 4) {
              code = win_lo & 0xfu;
              if (kept) {
                win_lo = __funnelshift_r(win_lo, win_hi, 4);
                win_hi >>= 4;
              }
            }
            if constexpr (kInt) {  // the pair of this position's group
              const StepPairs& rp = ((i >> 1) & 1) ? r1 : r0;
              pr[h] = col >= rp.next ? rp.b : rp.a;
            }
            if constexpr (kBook) {
              const uint32_t trow = ((i >> 1) & 1) ? trow1 : trow0;
              // Unconditional table load (a nested predicated one compiles to a branch).
              const uint32_t e = lds_u16(trow + 2 * (kept ? code : 0u));
              v[h] = kept ? e : 0u;
            } else if constexpr (value_bits(kCode) == 4) {
              v[h] = kept ? code : (pr[h] & 0xff);  // missing: the zero-point
            } else {
              v[h] = kept ? lds_value<kCode>(va) : kInt ? (pr[h] & 0xff) : 0u;  // int: zero-point
              va += kept ? kStep : 0u;
            }
          }
          if constexpr (kInt) {
            const uint32_t x = prmt(v[0], v[1], 0x5410) | 0x64006400u;
            a[reg] = h2_bits(__hmul2(__hsub2(bits_h2(x), bits_h2(prmt(pr[0], pr[1], 0x5410))),
                                     bits_h2(prmt(pr[0], pr[1], 0x7632))));
          } else {
            a[reg] = prmt(v[0], v[1], 0x5410);
          }
        }
      }  // positions expansion
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
        uint32_t b[4];
        ldmatrix_x4(b, xrow[nt] + s * 64);
        mma_f16(acc[0][nt], a[0], a[1], a[2], a[3], b[0], b[1]);
        mma_f16(acc[1][nt], a[4], a[5], a[6], a[7], b[2], b[3]);
      }
    }
    if (!last_of_group) continue;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        acc[0][nt][j] += acc[1][nt][j];
        acc[1][nt][j] = 0.0f;
      }
    flush_row_group<kWarps, kNTiles, OutT>(p, acc[0], g, u_begin, n_units, s_last);
  }
  cp_async_wait<0>();
}

template <CodeType kCode, bool kStepPairs, bool kLut, int kNTiles, typename OutT>
struct Kernel {
  static auto fn() { return bitmap_kernel<kCode, kStepPairs, kLut, kNTiles, OutT>; }
  static cudaError_t prepare() {
    static const cudaError_t e = [] {
      // The ring's size depends on the matrix: allow everything the device has beyond the
      // kernel's static shared memory.
      int device = 0, max_optin = 0;
      cudaFuncAttributes attr{};
      if (cudaGetDevice(&device) != cudaSuccess ||
          cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
              cudaSuccess ||
          cudaFuncGetAttributes(&attr, fn()) != cudaSuccess)
        return cudaErrorInvalidValue;
      const cudaError_t a =
          cudaFuncSetAttribute(fn(), cudaFuncAttributeMaxDynamicSharedMemorySize,
                               max_optin - static_cast<int>(attr.sharedSizeBytes));
      return a != cudaSuccess
                 ? a
                 : cudaFuncSetAttribute(fn(), cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    }();
    return e;
  }
  // Occupancy for a ring of this matrix's slot size, cached per KB of shared memory.
  static int resident(int smem) {
    static int cache[256] = {};
    const int key = std::min(smem / 1024, 255);
    if (cache[key] == 0)
      cache[key] = prepare() == cudaSuccess ? occupancy(fn(), kThreads, (key + 1) * 1024) : 1;
    return cache[key] * sm_count();
  }
};

template <CodeType kCode, bool kS, bool kL>
int resident(int smem, int64_t m) {
  return std::max(m <= 8 ? Kernel<kCode, kS, kL, 1, float>::resident(smem)
                         : Kernel<kCode, kS, kL, 2, float>::resident(smem),
                  m <= 8 ? Kernel<kCode, kS, kL, 1, __half>::resident(smem)
                         : Kernel<kCode, kS, kL, 2, __half>::resident(smem));
}

bool uses_step_pairs(const CompressedWeights& w) {
  return (w.code == CodeType::Int8 || w.code == CodeType::Int4) && w.scales_per_chunk == 1;
}

bool lut_for(const CompressedWeights& w) { return takes_lut(w.code, expansion_setting()); }

// Calls f(code, step pairs, LUT expansion) with the compile-time constants of w's kernel family.
template <typename F>
decltype(auto) with_family(const CompressedWeights& w, F&& f) {
  using Code = CodeType;
  const bool s = uses_step_pairs(w), l = lut_for(w);
  auto go = [&](auto code) -> decltype(auto) {
    constexpr bool kPairsPossible =
        decltype(code)::value != Code::Codebook4 && decltype(code)::value != Code::F16;
    if constexpr (kPairsPossible) {
      if (s)
        return l ? f(code, std::true_type{}, std::true_type{})
                 : f(code, std::true_type{}, std::false_type{});
    }
    return l ? f(code, std::false_type{}, std::true_type{})
             : f(code, std::false_type{}, std::false_type{});
  };
  switch (w.code) {
    case Code::Int8:
      return go(std::integral_constant<Code, Code::Int8>{});
    case Code::Int4:
      return go(std::integral_constant<Code, Code::Int4>{});
    case Code::Codebook4:
      return go(std::integral_constant<Code, Code::Codebook4>{});
    case Code::F16:
      break;
  }
  return go(std::integral_constant<Code, Code::F16>{});
}

// Int and codebook codes: the stream-K plan uses at most 3 CTAs per SM. With the codes read from
// a register window (session 15) or by the LUT expansion (session 21) ptxas gives these kernels
// 80-96 registers, so 5-6 CTAs fit per SM; CTA sweeps on the H100 measured 3 per SM as fast or
// faster (fewer split row groups, the same issue rate): session 15, 4-bit codes; session 21 (the
// LUT kernels, int8 too): 11008 x 4096 int8 m = 1 38.7 against 41.1 µs with 6 per SM, 4096 x
// 14336 48.4 against 53.1, m = 16 2-10% faster, 28672 x 8192 m = 1 158.5 against 151.0 (the one
// slower record; docs/compression.md, "Session 21").
constexpr int kMaxCtasPerSmCodes = 3;
// ... and at least ~4 units (row group x chunk) per CTA, so that each CTA's ring start-up is spread
// over several chunks: session 21's sweep, 4096 x 4096 m = 1 (1024 units), 2 CTAs per SM against
// 3 / 6: int8 22.0 against 26.3 µs, int4 21.0 / 22.2, codebook4 19.1 / 20.1, fp16 20.4 / 22.7.
constexpr int64_t kMinUnitsPerCta = 4;

int default_ctas(const CompressedWeights& w, int64_t m) {
  const int smem = smem_bytes(w.max_slot_bytes, static_cast<int>(m), w.code, lut_for(w));
  const int all = with_family(w, [&](auto code, auto pairs, auto lut) {
    return resident<decltype(code)::value, decltype(pairs)::value, decltype(lut)::value>(smem, m);
  });
  const int sms = sm_count();
  const int64_t units = w.rows_padded / (kWarps * 16) * w.kchunks;
  // CTAs per SM from the units: the nearest whole number to units / (4 x SMs), at least 1.
  const int64_t by_units =
      std::max<int64_t>(1, (units + kMinUnitsPerCta * sms / 2) / (kMinUnitsPerCta * sms)) * sms;
  const int cap = w.code == CodeType::F16 ? all : std::min(kMaxCtasPerSmCodes * sms, all);
  return static_cast<int>(std::min<int64_t>(cap, by_units));
}

template <CodeType kCode, bool kS, bool kL, int kNTiles>
cudaError_t launch(const Params& p, int smem, ElemType y_type, cudaStream_t stream) {
  auto go = [&](auto out) -> cudaError_t {
    using K = Kernel<kCode, kS, kL, kNTiles, decltype(out)>;
    if (cudaError_t e = K::prepare(); e != cudaSuccess) return e;
    K::fn()<<<p.ctas, kThreads, smem, stream>>>(p);
    return cudaGetLastError();
  };
  if (y_type == ElemType::F32) return go(float{});
  if (y_type == ElemType::F16) return go(__half{});
  return cudaErrorInvalidValue;
}

bool valid(const CompressedWeights& w) {
  return w.bitmap && w.rows > 0 && w.cols > 0 && w.rows_padded % kRowTile == 0 &&
         w.kchunks * kCols >= w.cols && w.tiles && w.offsets && w.max_slot_bytes > 0 &&
         w.max_slot_bytes % 16 == 0 && (w.code != CodeType::Codebook4 || w.books) &&
         (w.scales_per_chunk == 0 || uses_step_pairs(w));
}

}  // namespace

size_t bitmap_workspace_bytes(const CompressedWeights& w, int64_t m, int ctas) {
  const int64_t groups = w.rows_padded / (kWarps * 16);
  const int c = plan_ctas(ctas, groups * w.kchunks, default_ctas(w, m));
  return workspace_for(groups, c, kWarps * 16);
}

cudaError_t bitmap_decode(const CompressedWeights& w, const GemmProblem& pr, cudaStream_t stream) {
  if (!valid(w)) return cudaErrorInvalidValue;
  if (pr.m < 1 || pr.m > kDecodeMaxM || !pr.x || !pr.y) return cudaErrorInvalidValue;
  if (pr.ldx % 8 != 0 || reinterpret_cast<uintptr_t>(pr.x) % 16 != 0) return cudaErrorInvalidValue;
  if (pr.y_type != ElemType::F32 && pr.y_type != ElemType::F16) return cudaErrorInvalidValue;
  Params p{};
  p.tiles = static_cast<const unsigned char*>(w.tiles);
  p.offsets = w.offsets;
  p.slot_bytes = w.max_slot_bytes;
  p.x = pr.x;
  p.ldx = pr.ldx;
  p.m = static_cast<int>(pr.m);
  p.cols = w.cols;
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.rows = w.rows;
  p.kchunks = w.kchunks;
  p.books = reinterpret_cast<const uint4*>(w.books);
  p.book_rows = w.per_tensor_book ? 0 : 1;
  const int64_t groups = w.rows_padded / (kWarps * 16);
  p.units = groups * w.kchunks;
  p.ctas = plan_ctas(pr.ctas, p.units, default_ctas(w, pr.m));
  if (!pr.workspace || pr.workspace_bytes < workspace_for(groups, p.ctas, kWarps * 16))
    return cudaErrorInvalidValue;
  p.counters = static_cast<unsigned*>(pr.workspace);
  p.partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) + counters_bytes(groups));
  const int smem = smem_bytes(w.max_slot_bytes, p.m, w.code, lut_for(w));
  return with_family(w, [&](auto code, auto pairs, auto lut) {
    constexpr CodeType kC = decltype(code)::value;
    constexpr bool kS = decltype(pairs)::value, kL = decltype(lut)::value;
    return p.m <= 8 ? launch<kC, kS, kL, 1>(p, smem, pr.y_type, stream)
                    : launch<kC, kS, kL, 2>(p, smem, pr.y_type, stream);
  });
}

namespace detail {
void set_bitmap_expansion(int expansion) {
  expansion_setting() =
      expansion == kBitmapPositions || expansion == kBitmapLut ? expansion : kBitmapDefault;
}
int bitmap_expansion() { return expansion_setting(); }
}  // namespace detail

}  // namespace sparsa::cuda
