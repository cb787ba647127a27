// Stream-K split of the decode kernels and its fix-up, shared by the kernels that split K over
// CTAs (src/cuda/sparse_decode.cu; compressed_decode.cu and bitmap_decode.cu through
// compressed_common.cuh).
//
// Units (row group, K chunk), row-group-major, are divided evenly over the CTAs: CTA c owns
// [unit_begin(c), unit_begin(c + 1)). A CTA that covers a whole row group writes Y directly; a
// row group shared by several CTAs is combined by the last CTA to arrive: every CTA stores its
// partial sums in the workspace (slot 2c for the row group its range starts in, 2c + 1 for a
// later one), counts its arrival on the group's counter (one release/acquire atomic after a
// barrier), and the last one sums the partials in CTA order (deterministic) and resets the
// counter, so the next call needs no memset.
//
// The parameter struct P needs: units, kchunks, ctas, m, rows, y, ldy, partials, counters.
#pragma once

#include <cooperative_groups.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cuda/decode_workspace.h"
#include "cuda/mma_sp.cuh"

namespace sparsa::cuda::detail {

template <typename P>
__device__ __forceinline__ int64_t unit_begin(int64_t c, const P& p) {
  return c * p.units / p.ctas;
}
// The CTA whose range holds unit u: the largest c with unit_begin(c) <= u.
template <typename P>
__device__ __forceinline__ int64_t cta_of(int64_t u, const P& p) {
  return ((u + 1) * p.ctas - 1) / p.units;
}
// Partial slot of CTA c for row group g: 2c for the group its range starts in, else 2c + 1.
template <typename P>
__device__ __forceinline__ int64_t slot_of(int64_t c, int64_t g, const P& p) {
  return 2 * c + (g == unit_begin(c, p) / p.kchunks ? 0 : 1);
}

// The end of row group g in this CTA (units [u_begin, u_begin + n_units)): writes the kWarps x
// 16 rows x (8 * kNTiles) tokens of accumulators to Y, or takes part in the fix-up of a split
// group, and zeroes `acc`. acc[nt][j] of lane (g8 = lane / 4, t4 = lane % 4) of warp w holds row
// 16 * (g * kWarps + w) + g8 + 8 * (j / 2), token 8 * nt + 2 * t4 + j % 2 (mma.sp's C fragment).
// Every thread of the CTA must call it (it holds barriers); s_last is a __shared__ int.
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ void flush_row_group(const P& p, float (&acc)[kNTiles][4], int64_t g,
                                                int64_t u_begin, int64_t n_units, int& s_last) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kRows = kWarps * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
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
    return;
  }
  const int64_t my_slot = 2 * static_cast<int64_t>(blockIdx.x) + (g * p.kchunks > u_begin ? 1 : 0);
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tok = nt * 8 + 2 * t4 + (j & 1);
      const int local = warp * 16 + g8 + 8 * (j >> 1);
      if (tok < p.m) p.partials[(my_slot * 16 + tok) * kRows + local] = acc[nt][j];
      acc[nt][j] = 0.0f;
    }
  // Release the partials (the barrier makes every thread's stores part of thread 0's release),
  // count arrivals, and let the last CTA (acquire) sum them in CTA order. A per-thread
  // __threadfence here drained every thread's cp.async ring (v3).
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
  if (!s_last) return;
  // Every CTA after c_first starts inside g (slot 2c); c_first uses slot 1 unless it too starts
  // in g. Each thread sums kPer elements (idx = tok * kRows + local) over the CTAs in order,
  // with all loads of up to 4 CTAs issued before the adds (one dependent L2 load per add was a
  // chain of CTAs x elements round trips).
  const int64_t first_slot = slot_of(c_first, g, p);
  constexpr int kPer = 16 * kRows / kThreads;  // 8
  const int count = p.m * kRows;
  float sum[kPer];
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    sum[r] = idx < count ? __ldcg(p.partials + first_slot * 16 * kRows + idx) : 0.0f;
  }
  for (int64_t c = c_first + 1; c <= c_last; c += 4) {
    float v[4][kPer];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int r = 0; r < kPer; ++r) {
        const int idx = threadIdx.x + r * kThreads;
        v[u][r] = c + u <= c_last && idx < count
                      ? __ldcg(p.partials + 2 * (c + u) * 16 * kRows + idx)
                      : 0.0f;
      }
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int r = 0; r < kPer; ++r)
        if (c + u <= c_last) sum[r] += v[u][r];
  }
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int idx = threadIdx.x + r * kThreads;
    const int tok = idx / kRows, local = idx % kRows;
    const int64_t row = g * kRows + local;
    if (idx < count && row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(sum[r]);
  }
  if (threadIdx.x == 0) p.counters[g] = 0;
}

// 64-bit relaxed accesses at GPU scope (single-copy atomic: a tag read with its value).
__device__ __forceinline__ unsigned long long ld_relaxed_u64(const unsigned long long* a) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];\n" : "=l"(v) : "l"(a) : "memory");
  return v;
}
__device__ __forceinline__ void st_relaxed_u64(unsigned long long* a, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;\n" ::"l"(a), "l"(v) : "memory");
}

// The tagged protocol (v13, decode_tuning().tagged_fixup) for the end of row group g. The counter
// protocol ends every split CTA with ~3 dependent L2 round trips (the release fence waiting for
// the partial stores, the atomic, the last CTA's loads: ~2.8 us of tail after the last CTA's data
// on small products). Here a CTA whose range starts inside g (c > c_first) stores its partial sums
// as (kPartialTag, float) words in slot c (the only partial it ever stores: g is its first group)
// and goes on, with no fence, atomic or barrier. CTA c_first, whose range ends in g (so g is its
// last flush), keeps its sums in registers and reduces after its loop (tagged_reduce). Only for
// launches whose CTAs all fit at once: c_first waits for later CTAs, which write g's partial at
// the start of their range, before any wait of their own.

// This thread's sums of row group g to Y (acc[nt][j]: token 8 nt + 2 t4 + (j & 1), local row
// 16 warp + g8 + 8 (j >> 1)).
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ void write_group(const P& p, const float (&acc)[kNTiles][4], int64_t g) {
  constexpr int kRows = kWarps * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
  OutT* y = static_cast<OutT*>(p.y);
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tok = nt * 8 + 2 * t4 + (j & 1);
      const int64_t row = g * kRows + warp * 16 + g8 + 8 * (j >> 1);
      if (tok < p.m && row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(acc[nt][j]);
    }
}

// This thread's sums as tagged words of one partial slot (`slot`: its first word; word
// token * kRows + local), then zeroed.
template <int kWarps, int kNTiles, typename P>
__device__ __forceinline__ void publish_tagged(const P& p, float (&acc)[kNTiles][4],
                                               unsigned long long* slot) {
  constexpr int kRows = kWarps * 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tok = nt * 8 + 2 * t4 + (j & 1);
      const int local = warp * 16 + g8 + 8 * (j >> 1);
      if (tok < p.m)
        st_relaxed_u64(slot + tok * kRows + local,
                       uint64_t{kPartialTag} << 32 | __float_as_uint(acc[nt][j]));
      acc[nt][j] = 0.0f;
    }
}

// tagged_flush: writes Y (whole group) or publishes this CTA's partials in slot c (word
// (c * 16 + token) * kRows + local), zeroing `acc`, and returns false; returns true (acc kept)
// when this CTA is a split group's first and must call tagged_reduce(g) once its loop is done
// (g is then its last group).
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ bool tagged_flush(const P& p, float (&acc)[kNTiles][4], int64_t g,
                                             int64_t u_begin, int64_t n_units) {
  constexpr int kRows = kWarps * 16;
  const int64_t g_begin = g * p.kchunks;
  const bool whole = u_begin <= g_begin && g_begin + p.kchunks <= u_begin + n_units;
  if (!whole && u_begin <= g_begin) return true;  // c_first of a split group
  if (whole) {
    write_group<kWarps, kNTiles, OutT>(p, acc, g);
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[nt][j] = 0.0f;
  } else {
    publish_tagged<kWarps, kNTiles>(
        p, acc, reinterpret_cast<unsigned long long*>(p.partials) +
                    static_cast<int64_t>(blockIdx.x) * 16 * kRows);
  }
  return false;
}

// Tagged words of partial slots (element e = 4 nt + j of a thread: token 8 nt + 2 t4 + (j & 1),
// local row 16 warp + g8 + 8 (j >> 1); word (slot * 16 + token) * kRows + local). load_tagged:
// this thread's words of slots first .. first + kSlots - 1 below end (tokens < m; others 0).
// settle_tagged: re-loads each word until it holds the tag (its CTA has stored it), adds the
// values to this thread's sums in slot order and clears the words, so no tag is left for a later
// call. No barrier: each thread reads back exactly the elements it holds.
template <int kWarps, int kNTiles>
struct TaggedWords {
  static constexpr int kRows = kWarps * 16;
  static constexpr int kElems = kNTiles * 4;
  __device__ __forceinline__ static int tok_of(int e) {
    return (e >> 2) * 8 + 2 * ((threadIdx.x % 32) & 3) + (e & 1);
  }
  __device__ __forceinline__ static int local_of(int e) {
    return (threadIdx.x / 32) * 16 + ((threadIdx.x % 32) >> 2) + 8 * ((e & 3) >> 1);
  }
  template <typename P>
  __device__ __forceinline__ static unsigned long long* word(const P& p, int64_t slot, int e) {
    return reinterpret_cast<unsigned long long*>(p.partials) + (slot * 16 + tok_of(e)) * kRows +
           local_of(e);
  }
  __device__ __forceinline__ static bool tagged(unsigned long long w) {
    return static_cast<uint32_t>(w >> 32) == kPartialTag;
  }
};
template <int kWarps, int kNTiles, int kSlots, typename P>
__device__ __forceinline__ void load_tagged(const P& p, unsigned long long (&v)[kSlots][kNTiles * 4],
                                            int64_t first, int64_t end) {
  using W = TaggedWords<kWarps, kNTiles>;
#pragma unroll
  for (int u = 0; u < kSlots; ++u)
#pragma unroll
    for (int e = 0; e < W::kElems; ++e)
      v[u][e] = first + u < end && W::tok_of(e) < p.m ? ld_relaxed_u64(W::word(p, first + u, e)) : 0ull;
}
template <int kWarps, int kNTiles, int kSlots, typename P>
__device__ __forceinline__ void settle_tagged(const P& p, float (&acc)[kNTiles][4],
                                              unsigned long long (&v)[kSlots][kNTiles * 4],
                                              int64_t first, int64_t end) {
  using W = TaggedWords<kWarps, kNTiles>;
  auto wanted = [&](int u, int e) { return first + u < end && W::tok_of(e) < p.m; };
  bool ready = true;
#pragma unroll
  for (int u = 0; u < kSlots; ++u)
#pragma unroll
    for (int e = 0; e < W::kElems; ++e) ready = ready && (!wanted(u, e) || W::tagged(v[u][e]));
  while (!ready) {  // a CTA has not stored yet
    ready = true;
#pragma unroll
    for (int u = 0; u < kSlots; ++u)
#pragma unroll
      for (int e = 0; e < W::kElems; ++e)
        if (wanted(u, e) && !W::tagged(v[u][e])) {
          v[u][e] = ld_relaxed_u64(W::word(p, first + u, e));
          ready = ready && W::tagged(v[u][e]);
        }
  }
#pragma unroll
  for (int u = 0; u < kSlots; ++u)
#pragma unroll
    for (int e = 0; e < W::kElems; ++e)
      if (wanted(u, e)) {
        acc[e >> 2][e & 3] += __uint_as_float(static_cast<uint32_t>(v[u][e]));
        st_relaxed_u64(W::word(p, first + u, e), 0ull);
      }
}

// Adds the tagged words of slots first_slot .. first_slot + n_slots - 1 to this thread's sums in
// slot order, loads issued for up to kBatch slots at a time (32 words in flight at m = 1..8).
template <int kWarps, int kNTiles, typename P>
__device__ __forceinline__ void add_tagged_slots(const P& p, float (&acc)[kNTiles][4],
                                                 int64_t first_slot, int64_t n_slots) {
  constexpr int kBatch = 8 / kNTiles;
  const int64_t end = first_slot + n_slots;
  for (int64_t c = first_slot; c < end; c += kBatch) {
    unsigned long long v[kBatch][kNTiles * 4];
    load_tagged<kWarps, kNTiles>(p, v, c, end);
    settle_tagged<kWarps, kNTiles>(p, acc, v, c, end);
  }
}

// The slots a reducer adds: first .. first + n - 1.
struct SlotRange {
  int64_t first, n;
};
// c_first of split group g (after tagged_flush returned true): the words of c_first + 1 ..
// c_last, added in CTA order (the counter protocol's order: the same bits).
template <typename P>
__device__ __forceinline__ SlotRange tagged_slots(int64_t g, const P& p) {
  const int64_t c = blockIdx.x;
  return {c + 1, cta_of((g + 1) * p.kchunks - 1, p) - c};
}
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ void tagged_reduce(const P& p, float (&acc)[kNTiles][4], int64_t g) {
  const SlotRange r = tagged_slots(g, p);
  add_tagged_slots<kWarps, kNTiles>(p, acc, r.first, r.n);
  write_group<kWarps, kNTiles, OutT>(p, acc, g);
}

// Owner / helper plans (session 11, decode_tuning().ktail; P also needs ktail_head and
// ktail_helpers). Each row group g has H = ktail_head head units (chunks 0 .. H - 1) and a tail
// (chunks H .. kchunks - 1). CTAs 0 .. ktail_helpers - 1 are helpers: the head units of all groups,
// row-group-major, divided evenly over them; CTA ktail_helpers + g is the owner of group g and
// runs its tail. A helper stores each head piece as tagged words in slot g H + j (j: its rank
// among the helpers of g; at most H helpers share a group) and never waits; the owner adds the
// pieces in helper order after its loop and writes Y. The plan gives helpers fewer units than
// owners, so every piece was published at least a unit before its owner reads it, instead of at
// the same time as in stream-K's fix-up, where CTAs inside a group end together with its first.
// Without ktail_head: the stream-K range of unit_begin (stream_k_units).
// This CTA's first unit (row group g, chunk kc) and its number of units.
template <typename P>
__device__ __forceinline__ void stream_k_units(const P& p, int64_t& g, int64_t& kc, int64_t& n) {
  const int64_t b = unit_begin(blockIdx.x, p);
  g = b / p.kchunks;
  kc = b % p.kchunks;
  n = unit_begin(blockIdx.x + 1, p) - b;
}
template <typename P>
__device__ __forceinline__ void cta_units(const P& p, int64_t& g, int64_t& kc, int64_t& n) {
  const int64_t c = blockIdx.x;
  if (p.ktail_head <= 0) return stream_k_units(p, g, kc, n);
  const int64_t head = p.ktail_head;
  if (c >= p.ktail_helpers) {  // an owner: the tail of group c - helpers
    g = c - p.ktail_helpers;
    kc = head;
    n = p.kchunks - head;
    return;
  }
  const int64_t total = p.units / p.kchunks * head;
  const int64_t b = c * total / p.ktail_helpers, e = (c + 1) * total / p.ktail_helpers;
  g = b / head;
  kc = b % head;
  n = e - b;
}
// The helper whose range holds head unit h (as cta_of).
template <typename P>
__device__ __forceinline__ int64_t ktail_helper_of(int64_t h, const P& p) {
  const int64_t total = p.units / p.kchunks * p.ktail_head;
  return ((h + 1) * p.ktail_helpers - 1) / total;
}
// The owner of group g: the slots of its helpers' pieces, in helper order.
template <typename P>
__device__ __forceinline__ SlotRange ktail_slots(int64_t g, const P& p) {
  const int64_t head = p.ktail_head;
  return {g * head, ktail_helper_of(g * head + head - 1, p) - ktail_helper_of(g * head, p) + 1};
}
// The end of row group g in a ktail launch: a helper publishes its piece, zeroes `acc` and
// returns false; the owner (g is its only group) returns true and, after its loop (where the
// reducer's registers do not burden the loop), adds ktail_slots(g) and writes Y.
template <int kWarps, int kNTiles, typename P>
__device__ __forceinline__ bool ktail_flush(const P& p, float (&acc)[kNTiles][4], int64_t g) {
  constexpr int kRows = kWarps * 16;
  if (static_cast<int64_t>(blockIdx.x) >= p.ktail_helpers) return true;
  const int64_t head = p.ktail_head;
  const int64_t rank = static_cast<int64_t>(blockIdx.x) - ktail_helper_of(g * head, p);
  publish_tagged<kWarps, kNTiles>(
      p, acc, reinterpret_cast<unsigned long long*>(p.partials) + (g * head + rank) * 16 * kRows);
  return false;
}

// The end of a CTA's range when the grid runs as clusters of s = 2..8 CTAs that split one row
// group g between them (CTA rank r holds K chunks [r kchunks / s, (r + 1) kchunks / s), so every
// CTA flushes exactly once, and all CTAs of the cluster do). The partial sums go to this CTA's
// shared memory (`scratch`: 16 * kRows floats, free once every warp is done with its last unit),
// one cluster barrier publishes them, and rank r sums elements r * kThreads + t, stepping by
// s * kThreads, over the ranks in order (deterministic, and the same order as flush_row_group's
// CTA order, so the same bits) with all s loads issued before the adds, then writes Y; a second
// barrier keeps every CTA's shared memory alive until the others have read it. No workspace,
// counter or L2 round trip (v11).
template <int kWarps, int kNTiles, typename OutT, typename P>
__device__ __forceinline__ void flush_cluster(const P& p, float (&acc)[kNTiles][4], int64_t g,
                                              float* scratch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr int kThreads = kWarps * 32;
  constexpr int kRows = kWarps * 16;
  constexpr int kMaxCluster = 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g8 = lane >> 2, t4 = lane & 3;
  __syncthreads();  // every warp is done with the shared memory that scratch overlaps
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int tok = nt * 8 + 2 * t4 + (j & 1);
      const int local = warp * 16 + g8 + 8 * (j >> 1);
      if (tok < p.m) scratch[tok * kRows + local] = acc[nt][j];
      acc[nt][j] = 0.0f;
    }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // release this CTA's partials, acquire the others'
  const int s = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int count = p.m * kRows;
  OutT* y = static_cast<OutT*>(p.y);
  for (int idx = rank * kThreads + static_cast<int>(threadIdx.x); idx < count;
       idx += s * kThreads) {
    float v[kMaxCluster];
#pragma unroll
    for (int q = 0; q < kMaxCluster; ++q)
      v[q] = q < s ? *cluster.map_shared_rank(scratch + idx, q) : 0.0f;
    float sum = v[0];
#pragma unroll
    for (int q = 1; q < kMaxCluster; ++q)
      if (q < s) sum += v[q];
    const int tok = idx / kRows, local = idx % kRows;
    const int64_t row = g * kRows + local;
    if (row < p.rows) y[tok * p.ldy + row] = from_float<OutT>(sum);
  }
  cluster.sync();  // the other ranks may still read this CTA's scratch
#endif
}

}  // namespace sparsa::cuda::detail
