// Compressed 2:4 products with too few tokens for v12 (17..511 by default) reading the codes
// themselves (session 20): int8, int4 and codebook4 in the decode tiling (tile_compressed), no
// fp16 copy of the weights. Until now these went through compressed_expand.cu: one pass over
// the weights writing 1.125 bytes per weight position, then the register-A prefill reading them
// again, i.e. ~2.6 bytes per weight where the codes are 0.38-0.63 — slower than dense cuBLAS
// (0.62-0.74x at m = 64 / 256, session 19), although in this range the product is bound by the
// bytes of the weights.
//
// The kernel is the register-A wgmma.sp prefill (wgmma_prefill.cu, v5g / v10) with its A side
// taken from v12's codes variant (wgmma_prefill_ssc.cu, kACodes):
//   - CTA = 1 producer + 2 consumer warpgroups, tile 256 weight rows x 128 tokens; consumer
//     warpgroup wg owns one row group of the codes tiling (128 rows = 8 slots of 16 rows), i.e.
//     two m64 tiles, and issues one m64n128k32 wgmma.sp per m64 tile and k-step;
//   - X by TMA (64 columns x 128 tokens, 128-byte swizzle, zero-filled past m and K), 4 stages;
//   - per codes chunk (16 k-steps for 4-bit codes, 8 for int8) the producer adds one bulk copy of
//     each row group's 8 slots (contiguous in the tiling: code words, metadata, scale pairs) to the
//     chunk's first stage, into one of two chunk buffers;
//   - each consumer warp decodes its A fragments right before the k-step's wgmma with decode_a
//     (the decode kernels' instructions), so the fp16 weights it multiplies are exactly those of
//     the expansion: Y equals the register-A kernel on the expanded weights bit for bit (same
//     wgmma order, same split);
//   - split-K as v10 (the rule of nm24_split_rule, in 256-column chunks; splits on codes chunks):
//     fp32 partials after the decode counter region, then prefill_split.cuh's reduction.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "cuda/compressed_common.cuh"
#include "cuda/decode_workspace.h"
#include "cuda/mma_sp.cuh"
#include "cuda/prefill_split.cuh"
#include "cuda/slot_layout.cuh"
#include "cuda/wgmma_prefill_tiles.h"
#include "cuda/wgmma_primitives.cuh"
#include "sparsa/cuda_compressed.h"

namespace sparsa::cuda {
namespace {

using namespace detail;

constexpr int kBM = 256;            // weight rows per CTA: two row groups of the codes tiling
constexpr int kBN = 128;            // tokens per CTA (the wgmma N)
constexpr int kGroupRows = 128;     // rows of a row group (8 slots of 16 rows)
constexpr int kGroupSlots = 8;
constexpr int kStageCols = 64;      // columns of K per X stage (2 k-steps)
constexpr int kStageBytes = kBN * kStageCols * 2;  // 16 KB
constexpr int kStages = 4;
constexpr int kRaster = 8;          // row blocks per raster group (weights shared in L2)
constexpr int kThreads = 384;
// The largest slot a chunk buffer holds: 4-bit codes in 16 k-steps with groups of 32 (8 scale
// pairs a row): 2 KB of codes, 1 KB of metadata, 512 B of pairs.
constexpr int kMaxSlotBytes = 2048 + 1024 + 64 * 8;
constexpr int kChunkBytes = 2 * kGroupSlots * kMaxSlotBytes;  // both row groups' slots, 56 KB
constexpr int kSmemBytes = 1024 + kStages * kStageBytes + 2 * kChunkBytes + 2 * kStages * 8;
static_assert(kSmemBytes <= 227 * 1024, "over the 227 KB of shared memory per CTA");

struct CodesParams {
  const unsigned char* tiles;  // [row groups][kchunks][8 slots][slot_bytes]
  const uint4* books;          // codebook4: [rows or 1][2 uint4]
  void* y;
  float* partials;  // split-K: [split][token][ldp]
  int64_t ldy, ldp, m, rows;
  int64_t slot_bytes, kchunks;  // codes chunks of 8 (int8) or 16 (4-bit) k-steps
  int32_t row_groups, row_blocks, token_tiles, splits, spc, book_rows;
};

template <CodeType kCode, typename OutT, bool kSplit>
__global__ void __launch_bounds__(kThreads, 1)
    codes_prefill_kernel(const __grid_constant__ CUtensorMap x_map, const CodesParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kSteps = kCode == CodeType::Int8 ? 8 : 16;  // k-steps per codes chunk
  constexpr int kChunkStages = kSteps / 2;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;  // 128B swizzle: 1 KB aligned
  // shared memory: X stages | two chunk buffers | mbarriers
  const uint32_t chunk_base = base + kStages * kStageBytes;
  const uint32_t full_bar = chunk_base + 2 * kChunkBytes;
  const uint32_t empty_bar = full_bar + kStages * 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // This CTA's codes chunks [c0, c0 + n): all of K, or (split-K) split blockIdx.y's share.
  int64_t c0 = 0, n = p.kchunks;
  if constexpr (kSplit) {
    c0 = blockIdx.y * p.kchunks / p.splits;
    n = (blockIdx.y + 1) * p.kchunks / p.splits - c0;
  }
  const int64_t kt_count = n * kChunkStages;
  const RasterTile tile = grouped_raster_tile(blockIdx.x, kRaster, p.row_blocks, p.token_tiles, kBN);
  const int64_t row_block = tile.row_block;
  const int32_t tok0 = static_cast<int32_t>(tile.tok0);
  const uint32_t group_bytes = kGroupSlots * static_cast<uint32_t>(p.slot_bytes);

  if (threadIdx.x == 0) init_stage_barriers(full_bar, empty_bar, kStages, 8);
  __syncthreads();

  if (warp < 4) {  // ---- producer warpgroup: X by TMA, the codes chunks by bulk copies, one thread
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (warp == 0 && lane == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map)) : "memory");
      for (int64_t kt = 0; kt < kt_count; ++kt) {
        const int s = static_cast<int>(kt % kStages);
        // Stage kt - kStages released: for chunk c + 1 (written at its first stage) that means
        // every consumer warp has decoded all of chunk c - 1, whose buffer it takes.
        if (kt >= kStages) mbar_wait(empty_bar + 8 * s, static_cast<uint32_t>((kt / kStages - 1) & 1));
        const bool chunk_start = kt % kChunkStages == 0;
        mbar_expect_tx(full_bar + 8 * s, kStageBytes + (chunk_start ? 2 * group_bytes : 0));
        tma_load_2d(base + s * kStageBytes, &x_map,
                    static_cast<int32_t>((c0 * kChunkStages + kt) * kStageCols), tok0, full_bar + 8 * s);
        if (chunk_start) {
          const int64_t c = c0 + kt / kChunkStages;
          const uint32_t dst = chunk_base + static_cast<uint32_t>((kt / kChunkStages) & 1) * kChunkBytes;
#pragma unroll
          for (int g = 0; g < 2; ++g) {
            // A row block past the last row group (odd count) reads the last group, stores nothing.
            const int64_t rg = min(row_block * 2 + g, static_cast<int64_t>(p.row_groups) - 1);
            bulk_load_1d(dst + g * group_bytes, p.tiles + (rg * p.kchunks + c) * kGroupSlots * p.slot_bytes,
                         group_bytes, full_bar + 8 * s);
          }
        }
      }
    }
    return;
  }

  // ---- consumers: warpgroup wg owns row group 2 row_block + wg, its m64 tile mt the slots
  // 4 mt + wwarp (the wgmma A layout: warp w of the warpgroup holds rows 16w..16w+15).
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int wg = warp / 4 - 1, wwarp = warp % 4;
  const int64_t group = row_block * 2 + wg;
  uint32_t slot_off[2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
    slot_off[mt] = static_cast<uint32_t>((wg * kGroupSlots + mt * 4 + wwarp) * p.slot_bytes);
  Book book[2][2] = {};  // codebook4: [m tile][row g, row g + 8] (rows past N read the last one)
  if constexpr (kCode == CodeType::Codebook4) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int64_t row = group * kGroupRows + (mt * 4 + wwarp) * 16 + lane / 4;
      book[mt][0] = load_book(p.books, row < p.rows ? row : p.rows - 1, p.book_rows);
      book[mt][1] = load_book(p.books, row + 8 < p.rows ? row + 8 : p.rows - 1, p.book_rows);
    }
  }
  const SlotLayout<kCode> layout{SlotLayout<kCode>::shift_of(kSteps), p.spc};
  float acc[2][64];
  uint32_t a[2][2][4];  // [k-step parity][m tile]: the registers a wgmma still in flight may read
  uint32_t e[2][2] = {};  // [k-step parity][m tile]
#pragma unroll 1
  for (int64_t kc = 0; kc < n; ++kc) {
    const uint32_t buf = chunk_base + static_cast<uint32_t>(kc & 1) * kChunkBytes;
#pragma unroll
    for (int st = 0; st < kSteps; ++st) {
      const int64_t s = kc * kSteps + st, kt = s / 2;
      const int stage = static_cast<int>(kt % kStages), par = st & 1;
      if (par == 0) mbar_wait(full_bar + 8 * stage, static_cast<uint32_t>((kt / kStages) & 1));
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {  // the slot's metadata word, code word(s), scale pairs
        const uint32_t cs = buf + slot_off[mt];
        e[par][mt] = lds_32(cs + layout.meta(st, lane));
        decode_slot_kstep<kCode>(a[par][mt], layout, [cs](uint32_t o) { return lds_32(cs + o); }, st,
                                 lane, book[mt][0], book[mt][1]);
      }
      const uint64_t desc = b_desc(base + stage * kStageBytes + par * 64);
      const uint32_t accumulate = s != 0 ? 1u : 0u;  // the first k-step writes D = A B
      wgmma_fence();
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        if (par == 0)
          wgmma_sp_m64n128_sd<F16, 0, 0>(acc[mt], a[par][mt], desc, e[par][mt], accumulate);
        else
          wgmma_sp_m64n128_sd<F16, 1, 0>(acc[mt], a[par][mt], desc, e[par][mt], accumulate);
      }
      wgmma_commit();
      wgmma_wait<1>();  // k-step s - 1 done: its registers and, at a stage's start, its stage
      keep_metadata(e[1 - par]);  // k-step s - 1's metadata registers untouched till now
      if (par == 0 && s > 0 && lane == 0) mbar_arrive(empty_bar + 8 * ((kt + kStages - 1) % kStages));
    }
  }
  wgmma_wait<0>();
  // Every read of the accumulators behind the wait (v12 found ptxas storing them earlier).
  fence_accumulators(acc[0]);
  fence_accumulators(acc[1]);
  const int64_t row_base = group * kGroupRows;  // rows >= p.rows (and whole padding groups) skipped
  if constexpr (kSplit) {
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
    store_m64n128_pair(p.partials + blockIdx.y * p.m * p.ldp, p.ldp, acc, row_base, tok0, p.rows,
                       p.m, wwarp, lane);
  } else {
    store_m64n128_pair(static_cast<OutT*>(p.y), p.ldy, acc, row_base, tok0, p.rows, p.m, wwarp, lane);
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// Default chunk lengths only (the ones tile_compressed gives 2:4): int8 8 k-steps, 4-bit 16.
bool codes_layout_fits(const CompressedWeights& w) {
  if (w.vnm || w.bitmap || w.code == CodeType::F16) return false;
  if (w.ksteps != (w.code == CodeType::Int8 ? 8 : 16)) return false;
  const int64_t slot = compressed_slot_bytes(w.code, w.ksteps, w.scales_per_chunk);
  return slot % 16 == 0 && 2 * kGroupSlots * slot <= kChunkBytes && w.rows_padded % kGroupRows == 0 &&
         w.kchunks > 0;
}

int64_t row_blocks_of(const CompressedWeights& w) { return (w.rows_padded + kBM - 1) / kBM; }

// The automatic split (v10's rule, in 256-column chunks) or a forced one, capped at one split
// per codes chunk.
int resolve_splits(const CompressedWeights& w, int64_t m, int split) {
  const int64_t tiles = row_blocks_of(w) * ((m + kBN - 1) / kBN);
  if (split == 0) {
    const int64_t slot = compressed_slot_bytes(w.code, w.ksteps, w.scales_per_chunk);
    const double weight_bytes = static_cast<double>(w.rows_padded / kGroupRows * w.kchunks * kGroupSlots * slot) +
                                2.0 * static_cast<double>(m * w.cols);
    split = nm24_split_rule(tiles, w.kchunks * w.ksteps / 8, sm_count(), weight_bytes,
                            static_cast<double>(m * w.rows_padded * 4));
  }
  if (split < 1 || split > kPrefillMaxSplit) return 0;
  return static_cast<int>(std::min<int64_t>(split, w.kchunks));
}

size_t partials_need(const CompressedWeights& w, int64_t m, int splits) {  // 2:4 and V:2:M alike
  return splits > 1 ? split_partials_offset(w.rows_padded) + split_partials_bytes(w.rows_padded, m, splits)
                    : 0;
}

template <CodeType kCode>
cudaError_t launch(const CompressedWeights& w, const GemmProblem& pr, int splits, cudaStream_t stream) {
  CUtensorMap map{};
  if (!encode_x_map<F16>(&map, pr.x, w.cols, pr.m, pr.ldx, kStageCols, kBN, CU_TENSOR_MAP_SWIZZLE_128B))
    return cudaErrorInvalidValue;
  CodesParams p{};
  p.tiles = static_cast<const unsigned char*>(w.tiles);
  p.books = reinterpret_cast<const uint4*>(w.books);
  p.y = pr.y;
  p.ldy = pr.ldy;
  p.m = pr.m;
  p.rows = w.rows;
  p.slot_bytes = compressed_slot_bytes(w.code, w.ksteps, w.scales_per_chunk);
  p.kchunks = w.kchunks;
  p.row_groups = static_cast<int32_t>(w.rows_padded / kGroupRows);
  p.row_blocks = static_cast<int32_t>(row_blocks_of(w));
  p.token_tiles = static_cast<int32_t>((pr.m + kBN - 1) / kBN);
  p.splits = splits;
  p.spc = w.scales_per_chunk;
  p.book_rows = w.per_tensor_book ? 0 : 1;
  const dim3 grid(static_cast<unsigned>(int64_t{p.row_blocks} * p.token_tiles), static_cast<unsigned>(splits));
  if (splits > 1) {
    p.partials = reinterpret_cast<float*>(static_cast<char*>(pr.workspace) + split_partials_offset(w.rows_padded));
    p.ldp = w.rows_padded;
    auto kernel = codes_prefill_kernel<kCode, float, true>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
        e != cudaSuccess)
      return e;
    kernel<<<grid, kThreads, kSmemBytes, stream>>>(map, p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    return launch_split_reduce(p.partials, splits, pr.m, w.rows, p.ldp, pr.y, pr.y_type, pr.ldy, stream);
  }
  return dispatch_out(pr.y_type, [&](auto out) -> cudaError_t {
    auto kernel = codes_prefill_kernel<kCode, decltype(out), false>;
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
        e != cudaSuccess)
      return e;
    kernel<<<grid, kThreads, kSmemBytes, stream>>>(map, p);
    return cudaGetLastError();
  });
}

}  // namespace

bool compressed_prefill_codes_supported() {
  return hopper_wgmma_usable([] {
    return has_sm90a_body(codes_prefill_kernel<CodeType::Int8, float, false>) &&
           has_sm90a_body(codes_prefill_kernel<CodeType::Int4, __half, false>) &&
           has_sm90a_body(codes_prefill_kernel<CodeType::Codebook4, float, true>);
  });
}

bool compressed_prefill_takes_codes(const CompressedWeights& w, int64_t m) {
  static const bool expand = [] {
    const char* v = std::getenv("SPARSA_COMPRESSED_PREFILL");
    return v && std::strcmp(v, "expand") == 0;
  }();
  if (expand || m <= kDecodeMaxM) return false;
  // V:2:M: the staged wgmma kernel on the codes (session 20), except where the fp16 path would
  // run V:2:M as 2:4 over the full K (vnm_prefill_expands: M = 8 from 2048 tokens), which is
  // faster than any gathered kernel there.
  if (w.vnm)
    return compressed_prefill_vnm_codes_supported(w) && !vnm_prefill_expands(expanded_vnm_shape(w), m);
  return codes_layout_fits(w) && compressed_prefill_codes_supported();
}

int compressed_prefill_codes_splits(const CompressedWeights& w, int64_t m, int split) {
  if (w.vnm) return compressed_prefill_vnm_codes_splits(w, m, split);
  if (m < 1 || !codes_layout_fits(w)) return 0;
  return resolve_splits(w, m, split);
}

size_t compressed_prefill_codes_workspace_bytes(const CompressedWeights& w, int64_t m, int split) {
  return partials_need(w, m, compressed_prefill_codes_splits(w, m, split));
}

cudaError_t compressed_prefill_codes(const CompressedWeights& w, const GemmProblem& pr,
                                     cudaStream_t stream, int split) {
  if (w.vnm) return compressed_prefill_vnm_codes(w, pr, stream, split);
  if (!codes_layout_fits(w) || !w.tiles || reinterpret_cast<uintptr_t>(w.tiles) % 16 != 0 ||
      (w.code == CodeType::Codebook4 && !w.books))
    return cudaErrorInvalidValue;
  if (pr.m < 1 || !pr.x || !pr.y || pr.ldx < w.cols || pr.ldx % 8 != 0 ||
      reinterpret_cast<uintptr_t>(pr.x) % 16 != 0)
    return cudaErrorInvalidValue;
  if (pr.m > INT32_MAX / 2 || w.cols > INT32_MAX / 2 || w.kchunks * w.ksteps * 32 > INT32_MAX / 2 ||
      row_blocks_of(w) * ((pr.m + kBN - 1) / kBN) > INT32_MAX)
    return cudaErrorInvalidValue;
  if (split < 0 || split > kPrefillMaxSplit) return cudaErrorInvalidValue;
  int splits = resolve_splits(w, pr.m, split);
  if (splits < 1) return cudaErrorInvalidValue;
  const size_t need = partials_need(w, pr.m, splits);
  if (need > 0 && (!pr.workspace || reinterpret_cast<uintptr_t>(pr.workspace) % 16 != 0 ||
                   pr.workspace_bytes < need)) {
    if (split != 0) return cudaErrorInvalidValue;  // a forced split refuses a short workspace
    splits = 1;                                    // the automatic rule runs unsplit instead
  }
  if (!compressed_prefill_codes_supported()) return cudaErrorNotSupported;
  switch (w.code) {
    case CodeType::Int8:
      return launch<CodeType::Int8>(w, pr, splits, stream);
    case CodeType::Int4:
      return launch<CodeType::Int4>(w, pr, splits, stream);
    default:
      return launch<CodeType::Codebook4>(w, pr, splits, stream);
  }
}

}  // namespace sparsa::cuda
