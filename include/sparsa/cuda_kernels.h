// Sparse tensor-core GEMMs on NVIDIA GPUs (sm_80 and later): Y[m, N] = X[m, K] * W[N, K]^T with
// W packed 2:4 or V:2:M, X and W fp16 or bf16, fp32 accumulation, Y fp32, fp16 or bf16.
//
// Weights live on the device in a "GPU tiling" (docs/formats.md, section "GPU tiling") made on
// the host from the canonical packed arrays (sparsa/format.h) by tile_nm24 / tile_vnm: values in
// mma.sp fragment order so that one 16-byte load per lane feeds one m16n8k32 MMA, metadata
// pre-permuted per lane. The weight rows sit on the MMA's M side, the tokens on its N side.
//
// Launchers follow FlashInfer: raw device pointers, sizes, strides and a stream; they return
// cudaSuccess or the first CUDA error (cudaErrorInvalidValue for arguments they reject) and
// never synchronise. Built only when CUDA is found (SPARSA_WITH_CUDA).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sparsa {
struct PackedMatrix;
}

namespace sparsa::cuda {

enum class ElemType : int { F32 = 0, F16 = 1, BF16 = 2 };

// ---- host side: canonical packed arrays -> GPU tiling ---------------------------------------
// Tiles are 128 weight rows (rows padded with zeros) and 256 columns of K for 2:4 (64 blocks
// of M columns for V:N:M); padding values are 0 and padding metadata selects columns 0 and 1.
inline constexpr int64_t kRowTile = 128;
inline constexpr int64_t kKChunk = 256;  // 2:4: columns per metadata chunk (8 MMA k-steps)

struct Nm24Tiled {
  int64_t rows = 0, cols = 0;                // the dense shape [N, K]
  int64_t rows_padded = 0, cols_padded = 0;  // multiples of kRowTile and kKChunk
  ElemType type = ElemType::F16;
  std::vector<uint16_t> values;  // [rows_padded/16][cols_padded/32][32 lanes][8]
  std::vector<uint32_t> meta;    // [rows_padded/16][cols_padded/256][32 lanes][4]
};

struct VnmTiled {
  int64_t rows = 0, cols = 0;
  int v = 0, m = 0;                                // V:2:M
  int64_t blocks = 0, blocks_padded = 0;           // CB = ceil(cols/M), padded to a multiple of 64
  int64_t rows_padded = 0, row_groups_padded = 0;  // rows_padded / V rounded up
  ElemType type = ElemType::F16;
  std::vector<uint16_t> values;   // [rows_padded/16][blocks_padded/8][32 lanes][8]
  std::vector<uint32_t> meta;     // [rows_padded/16][blocks_padded/64][32 lanes][4]
  std::vector<uint32_t> columns;  // [row_groups_padded][blocks_padded], byte j = j-th kept column
};

// From the canonical arrays of sparsa/format.h (nm 2:4: values[rows*G*2], indices
// U32[rows*ceil(G/8)], G = ceil(cols/4); vnm: columns U8[RB*CB*4], values[rows*CB*2], metadata
// U32[rows*ceil(CB/8)]). `values` are fp16 or bf16 bits. Throws sparsa::Error on metadata that no
// mma.sp can express (two kept values on one column with both nonzero).
Nm24Tiled tile_nm24(const uint16_t* values, const uint32_t* indices, int64_t rows, int64_t cols,
                    ElemType type);
VnmTiled tile_vnm(const uint8_t* columns, const uint16_t* values, const uint32_t* metadata,
                  int64_t rows, int64_t cols, int v, int m, ElemType type);
// The same from a PackedMatrix (format nm 2:4 or vnm, values f16 or bf16).
Nm24Tiled tile_nm24(const PackedMatrix& packed);
VnmTiled tile_vnm(const PackedMatrix& packed);

// ---- device side ----------------------------------------------------------------------------
// 2:4 values on the device come in two layouts of the same kept values (docs/formats.md, "GPU
// tiling"): `values`, tile_nm24's mma.sp fragment order, and `values_k`, row-major
// [rows_padded][cols_padded / 2] (nm24_tile_k writes it from `values`). Every 2:4 kernel can read
// values_k (session 7): the decode, mma.sp and register-A wgmma kernels copy row pieces into
// shared memory and load the same fragments with ldmatrix (measured 1.3-1.7x slower than from
// `values` on the H100, docs/kernels-gpu.md "Session 7"); the shared-memory-A wgmma kernel
// (nm24_prefill_wgmma_ss) reads only values_k. At least one must be set.
struct Nm24Weights {  // device pointers into an uploaded Nm24Tiled
  const void* values = nullptr;  // fragment order; may be null when values_k is set
  const uint32_t* meta = nullptr;
  int64_t rows = 0, cols = 0, rows_padded = 0, cols_padded = 0;
  ElemType type = ElemType::F16;
  const void* values_k = nullptr;  // row-major; may be null when values is set
};

// SPARSA_NM24_LAYOUT (read once per process): "k" -> ValuesK: upload writes only `values_k`
// (1.125 bytes per weight with the metadata, one layout) and kernels read `values_k` when set;
// unset or anything else -> Fragments (the default): upload writes `values` (plus `values_k` on
// sm_90a with the opt-in SPARSA_PREFILL24=ss*), kernels read `values` when set.
enum class Nm24Layout { Fragments, ValuesK };
Nm24Layout nm24_layout();
// Whether the 2:4 decode, mma.sp and register-A wgmma kernels read w.values_k (else w.values).
inline bool nm24_reads_values_k(const Nm24Weights& w) {
  return w.values_k != nullptr && (w.values == nullptr || nm24_layout() == Nm24Layout::ValuesK);
}

struct VnmWeights {  // device pointers into an uploaded VnmTiled
  const void* values = nullptr;
  const uint32_t* meta = nullptr;
  const uint32_t* columns = nullptr;
  int64_t rows = 0, cols = 0, rows_padded = 0, blocks_padded = 0, row_groups_padded = 0;
  int v = 0, m = 0;
  ElemType type = ElemType::F16;
  // Optional (opt-in, session 13): the same W as 2:4 over the full K in tile_nm24's layout
  // (vnm_expand_to_nm24), held beside the V:2:M tiling for the prefill; see vnm_prefill_copy_held.
  const void* prefill_values = nullptr;
  const uint32_t* prefill_meta = nullptr;
};

// One product. x: [m, ldx] row-major, same element type as the weights, 16-byte aligned with
// ldx % 8 == 0. y: [m, ldy] row-major of y_type (for fp16/bf16 outputs ldy % 2 == 0).
// workspace (decode path; and the 2:4 wgmma prefill's split-K partials since session 7): partial
// sums and counters, at least *_workspace_bytes(); zero it once (cudaMemset) before the first
// call: every call leaves its counters zero again.
struct GemmProblem {
  const void* x = nullptr;
  int64_t m = 0, ldx = 0;
  void* y = nullptr;
  int64_t ldy = 0;
  ElemType y_type = ElemType::F32;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int ctas = 0;  // decode path: CTAs sharing the work (stream-K); 0 = as many as fit at once
};

// The decode path (memory-bound, mma.sp with tokens on the MMA's N side) serves m <= 16; the
// prefill path (tiled mma.sp GEMM) serves any m. nm24_gemm / vnm_gemm pick by m.
// On sm_90 the decode kernels use programmatic dependent launch: a decode kernel may start while
// the kernel before it on the stream is finishing and prefetch its weights before waiting for it
// (X, Y and the workspace are touched only after the wait). So the packed weights must not be
// written by the kernel launched just before the decode call on the same stream (copies and
// uploads are fully ordered); set SPARSA_DECODE_PDL=0 to switch it off (src/cuda/decode_tuning.h).
inline constexpr int64_t kDecodeMaxM = 16;

size_t nm24_workspace_bytes(const Nm24Weights& w, int64_t m, int ctas = 0);
cudaError_t nm24_decode(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream);
cudaError_t nm24_prefill(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream);
// The two prefill kernels nm24_prefill chooses from: mma.sp m16n8k32 (any sm_80+ device, any m)
// and wgmma.sp (sm_90a image on a compute capability 9.0 device; cudaErrorNotSupported
// elsewhere). nm24_prefill takes wgmma from nm24_wgmma_min_m() tokens where
// nm24_wgmma_supported(), vnm_prefill from vnm_wgmma_min_m(): both kWgmmaMinM = kDecodeMaxM + 1,
// i.e. every prefill on sm_90a (session 20, H100, same run, m = 17 / 32 / 48 on the 7 benchmark
// shapes: from 64, the mma.sp kernels' medians 0.51 / 0.42 / 0.84-0.94x cuBLAS for 2:4 / 64:2:8 /
// 128:2:16, the wgmma kernels' 1.23-1.26 / 1.36-1.39 / 1.79-1.88x). SPARSA_WGMMA_MIN_M=n (n >= 17)
// sets both, for A/B runs.
inline constexpr int64_t kWgmmaMinM = kDecodeMaxM + 1;
int64_t nm24_wgmma_min_m();
int64_t vnm_wgmma_min_m();
cudaError_t nm24_prefill_mma(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream);
cudaError_t nm24_prefill_wgmma(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream);
bool nm24_wgmma_supported();
// Split-K of nm24_prefill_wgmma (v10, session 7) for products with fewer CTA tiles (256 rows x
// 128 / 192 tokens) than SMs: `split` CTAs per tile over even shares of K store fp32 partials in
// p.workspace, a second kernel on the stream sums them in split order into Y (deterministic).
// split: 0 -> SPARSA_PREFILL24_SPLIT (default: automatic), -1 automatic, 1 unsplit (v9),
// 2..kPrefillMaxSplit forced (capped at one split per 256 columns of K). The automatic choice
// runs unsplit when the workspace cannot hold the partials; a forced one returns
// cudaErrorInvalidValue then and writes nothing. nm24_prefill_wgmma(p) = split 0.
inline constexpr int kPrefillMaxSplit = 8;
cudaError_t nm24_prefill_wgmma_split(const Nm24Weights& w, const GemmProblem& p,
                                     cudaStream_t stream, int split, int tokens_per_tile = 0);
// v10b (session 8, opt-in): the same split, reduced inside a thread-block cluster of the s split
// CTAs of a tile through distributed shared memory (rank order = split order: the same bits as
// v10's reduction; no partials, no second kernel). cluster: 0 -> SPARSA_PREFILL24_SPLIT_CLUSTER
// (unset / 0: off, "1": 2, "shrink": 3), 1 off, 2 on, 3 on with shrink. Where the clusters of s
// CTAs do not all fit at once (cudaOccupancyMaxActiveClusters < tiles), 2 takes v10's workspace
// path instead and 3 the largest s' < s whose clusters fit (v10 if none).
cudaError_t nm24_prefill_wgmma_split_cluster(const Nm24Weights& w, const GemmProblem& p,
                                             cudaStream_t stream, int split, int cluster,
                                             int tokens_per_tile = 0);
// The cluster size such a call (split and tokens as above) reduces in (0: unsplit or v10).
int nm24_prefill_cluster_splits(const Nm24Weights& w, int64_t m, int split, int cluster,
                                int tokens_per_tile = 0);
// Workspace bytes that split (as above) needs for m tokens (0: none); nm24_workspace_bytes
// includes it for m > kDecodeMaxM. The partials start after the decode counters' region, so the
// same zeroed workspace serves decode and prefill calls.
size_t nm24_prefill_workspace_bytes(const Nm24Weights& w, int64_t m, int split = 0);
// wgmma.sp with W (A) read from shared memory by descriptor (sm_90a), W loaded by TMA from
// w.values_k: tokens_per_tile 128 or 192 (v8 with that token tile), -1 (v8, tile by wave count),
// 0 (v12, nm24_prefill_wgmma_ssc, unless nm24_prefill_ssc_mode() says v8: then v8 with
// nm24_prefill_ss_tokens()). cudaErrorInvalidValue without values_k, cudaErrorNotSupported off
// sm_90a.
// nm24_prefill takes it at m >= kWgmmaMinM when w.values_k is set and nm24_prefill_takes_ss().
cudaError_t nm24_prefill_wgmma_ss(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream,
                                  int tokens_per_tile = 0);
bool nm24_wgmma_ss_supported();
// SPARSA_PREFILL24 (2:4 prefill kernel on sm_90a, for A/B runs): ss, ssc*, ssv8 -> -1
// (shared-memory-A kernels: v12, or v8 with its tile by wave count), ss128 / ss192 -> 128 / 192
// (v8, forced tile); unset or anything else -> 0 (the kernel and tile of the default choice).
int nm24_prefill_ss_tokens();
// v12 (session 16, src/cuda/wgmma_prefill_ssc.cu): 128-row x 256-token tiles (one m64n256k32
// wgmma.sp per consumer warpgroup and k-step, X from shared memory), X shared by `cluster` (1, 2
// or 4) CTAs of adjacent row blocks through TMA multicast, one cluster per tile, the epilogue staged
// through the idle pipeline slots for 16-byte stores. Reads w.values_k (as nm24_prefill_wgmma_ss)
// or w.values (`a` below). Streamed tail (session 19, src/cuda/ssc_tail.h): where the tiles do
// not fill their last wave, the last partial wave and the whole one before it are cut along K
// into one share per resident cluster (a tile cut at most once; persistent form only), the first piece's fp32 sums in
// p.workspace (nm24_prefill_ssc_workspace_bytes; a shorter workspace runs without):
// tail_clusters 0 plans for the device's resident clusters with SPARSA_PREFILL24_SSC_TAIL=1,
// > 0 for that many (tests; cudaErrorInvalidValue when there is no plan or the workspace cannot
// hold it), -1 never. `persistent` (session 16, A/B): one cluster per resident pair walking the
// tiles it takes from a counter in p.workspace (kCounterRegion bytes at least;
// cudaErrorInvalidValue without), the shares (as above) handed out last.
// `a` (session 17): which layout of the values it reads: RowMajor (w.values_k, shared-memory A
// by descriptor), Fragments (w.values, the default layout every 2:4 kernel reads: each consumer
// warp loads its A fragments from the stage with one 16-byte shared load per k-step and runs the
// register-A form of the same wgmma), Auto (values_k where the weights carry it, else fragments).
// cudaErrorInvalidValue for bad arguments (the chosen layout missing), cudaErrorNotSupported off
// sm_90a.
// `store` (session 18): how the persistent form writes a 16-bit Y. Auto: by TMA stores (each
// consumer warp stages 32 tokens of its 16 rows with stmatrix and goes on while the store runs)
// where Y and its row stride are 16-byte aligned and N is a multiple of 8 (TMA writes whole
// 16-byte pieces of a row), unless SPARSA_PREFILL24_EPILOGUE=passes or direct (A/B); Staged: the
// consumers' own 16-byte stores through shared memory (before session 18); Tma: TMA stores,
// cudaErrorInvalidValue where they cannot run (fp32 Y, not persistent, unaligned Y, N % 8 != 0).
// The one-cluster-per-tile form and fp32 Y always store as Staged.
enum class Nm24SscA { Auto, RowMajor, Fragments };
enum class Nm24SscStore { Auto, Staged, Tma };
cudaError_t nm24_prefill_wgmma_ssc(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream,
                                   int cluster = 2, int tail_clusters = 0, bool persistent = false,
                                   Nm24SscA a = Nm24SscA::Auto,
                                   Nm24SscStore store = Nm24SscStore::Auto);
size_t nm24_prefill_ssc_workspace_bytes(const Nm24Weights& w, int64_t m, int cluster = 2,
                                        bool persistent = false);
bool nm24_wgmma_ssc_supported();
// Whether nm24_prefill_wgmma_ss with tokens_per_tile 0 runs v12 (and with which cluster size):
// yes unless SPARSA_PREFILL24 asks for v8 (ss128, ss192, ssv8: v8 by wave count) or the
// register-A kernel (v5g*); ssc1 / ssc2 / ssc4 choose the cluster (default 2; on either layout
// SPARSA_PREFILL24_SSC_CLUSTER=1|2|4); persistent unless the value ends in "np" (sscnp, ssc1np:
// one cluster per tile).
struct Nm24SscMode {
  bool on = false;
  int cluster = 2;
  bool persistent = true;
};
Nm24SscMode nm24_prefill_ssc_mode();
// nm24_prefill takes v12 (where it takes the shared-memory-A kernels) from this many tokens; below
// it, weights that also carry the fragment layout run the register-A kernel with split-K (v10).
inline constexpr int64_t kSscMinM = 512;
// Below kSscFillFreeM tokens nm24_prefill takes v12 on fragments only where its tiles fill at
// least kSscMinWaveFill of the waves they take on the resident clusters (v12 does not split K;
// the register-A kernel with split-K fills the rest). H100, session 17, m = 512: v12 took
// 0.87-0.91x the register-A kernel's time where the fill was 0.85-0.97 and 1.04-1.15x where it was
// 0.48-0.65; at m = 1024 (fill >= 0.87) 0.81-0.96x on every benchmark shape.
inline constexpr int64_t kSscFillFreeM = 2048;
inline constexpr double kSscMinWaveFill = 0.75;
// The fill of v12's tiles for w and m tokens: tiles / (waves x resident clusters), 0 off sm_90a.
double nm24_prefill_ssc_wave_fill(const Nm24Weights& w, int64_t m);
// Whether nm24_prefill runs v12 on the fragment layout for w and m tokens (session 17, the
// default from kSscMinM tokens on sm_90a): w carries `values` (or is a shape without pointers,
// as workspace queries pass), m >= kSscMinM (below kSscFillFreeM with the wave fill above), v12 is on
// (nm24_prefill_ssc_mode) and usable, and the weights do not go to the shared-memory-A kernels
// on values_k instead (nm24_prefill_takes_ss with values_k held). SPARSA_PREFILL24=v5g keeps the
// register-A kernel (v9 / v10 / v11) for A/B runs.
bool nm24_prefill_takes_ssc_fragments(const Nm24Weights& w, int64_t m);
// Whether nm24_prefill takes the shared-memory-A kernel for w (which must carry values_k): with
// SPARSA_PREFILL24=ss*; never with SPARSA_PREFILL24=v5g* (the register-A kernel); unset: when
// the other kernels would read values_k too (nm24_reads_values_k: it is the fastest reader of
// that layout).
bool nm24_prefill_takes_ss(const Nm24Weights& w);
// Bytes of the values_k layout, and the device re-tiling values -> values_k (stream-ordered).
size_t nm24_values_k_bytes(const Nm24Weights& w);
cudaError_t nm24_tile_k(const Nm24Weights& w, void* values_k, cudaStream_t stream);
cudaError_t nm24_gemm(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream);

size_t vnm_workspace_bytes(const VnmWeights& w, int64_t m, int ctas = 0);
cudaError_t vnm_decode(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream);
cudaError_t vnm_prefill(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream);
// The two V:2:M prefill kernels vnm_prefill chooses from: mma.sp m16n8k32 (any sm_80+ device,
// any V and M, any m) and wgmma.sp (sm_90a image on a compute capability 9.0 device, V = 64 or
// 128, M <= 16; cudaErrorNotSupported otherwise). vnm_prefill takes wgmma for m >= kWgmmaMinM
// where vnm_wgmma_supported(w).
cudaError_t vnm_prefill_mma(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream);
cudaError_t vnm_prefill_wgmma(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream);
bool vnm_wgmma_supported(const VnmWeights& w);
// vnm_prefill_wgmma picks one of two wgmma kernels by pattern (docs/kernels-gpu.md, session 5):
// the staged kernel (dense X by TMA, gather in shared memory; vnm_prefill_wgmma_staged) or the
// Xᵀ kernel: X transposed into a stream-ordered temporary (cudaMallocAsync, vnm_xt_bytes), then
// vnm_prefill_wgmma_xt copies the kept columns of Xᵀ straight into the wgmma's B tiles (the
// transpose counts in the call). Callers that hold Xᵀ already (xt [cols, ldxt], tokens
// contiguous, ldxt >= vnm_xt_ld(m), ldxt % 8 == 0, 16-byte aligned; p.x unused) may call
// vnm_prefill_wgmma_xt directly; vnm_transpose_x writes it from p.x (tokens m .. ldxt - 1 as
// zeros). SPARSA_VNM_XT=0 / 1 forces the staged / Xᵀ kernel.
int64_t vnm_xt_ld(int64_t m);
size_t vnm_xt_bytes(const VnmWeights& w, int64_t m);
cudaError_t vnm_transpose_x(const GemmProblem& p, int64_t cols, void* xt, int64_t ldxt,
                            cudaStream_t stream);
cudaError_t vnm_prefill_wgmma_xt(const VnmWeights& w, const void* xt, int64_t ldxt,
                                 const GemmProblem& p, cudaStream_t stream);
bool vnm_wgmma_xt_supported(const VnmWeights& w);
cudaError_t vnm_prefill_wgmma_staged(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream);
// Split-K of the V:2:M wgmma prefill (session 8), as nm24_prefill_wgmma_split: `split` CTAs per
// 256-row x 128-token tile over even shares of K's metadata chunks (64 blocks) store fp32
// partials in p.workspace, a second kernel sums them in split order into Y. split: 0 ->
// SPARSA_VNM_PREFILL_SPLIT (default automatic), -1 automatic, 1 unsplit, 2..kPrefillMaxSplit
// forced (capped at one split per chunk; cudaErrorInvalidValue when the workspace cannot hold the
// partials, where the automatic choice runs unsplit). vnm_prefill_wgmma(p) = split 0.
cudaError_t vnm_prefill_wgmma_split(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream,
                                    int split);
// The split count that call takes for m tokens when the workspace fits (0: invalid request), and
// the workspace bytes it needs (0: none).
int vnm_prefill_splits(const VnmWeights& w, int64_t m, int split);
size_t vnm_prefill_workspace_bytes(const VnmWeights& w, int64_t m, int split = 0);
bool vnm_wgmma_staged_supported(const VnmWeights& w);

// ---- V:2:M as 2:4 over the full K (session 13, src/cuda/vnm_expand.cu) --------------------
// With M % 4 == 0 each 4-column group of K lies inside one M-column block, and a row keeps 2
// values per block, so at most 2 per group: the same W is a 2:4 matrix over the dense K. The
// 2:4 wgmma prefill then runs it on the dense X (no gather of X in shared memory: the V:2:M
// kernels' wall, docs/kernels-gpu.md "V:2:M prefill on wgmma.sp") at twice the MMA work of the
// gathered kernels. vnm_prefill_expanded re-tiles W into a stream-ordered temporary
// (cudaMallocAsync, 1.125 bytes per weight position; counted in the call) and calls
// nm24_prefill. vnm_prefill takes it where vnm_prefill_expands(w, m): SPARSA_VNM_EXPAND=0 never,
// =1 wherever it can run (M % 4 == 0, the 2:4 wgmma kernel available, m >= kWgmmaMinM), unset:
// M = 8 and m >= kVnmExpandMinM (measured on the H100, docs/kernels-gpu.md "Session 13": the
// re-tiling costs ~13-31 us on 4096 x 4096 .. 14336 x 4096 and ~120 us at 28672 x 8192, the 2:4
// kernel takes ~0.7-0.75 of the gathered kernel's time, so it pays from m ~ 2048).
// Held copy (opt-in): with SPARSA_VNM_PREFILL_COPY=1, upload(VnmTiled) also writes the 2:4 tiling
// once (+1.125 bytes per weight position; 64:2:8 then holds 1.70 bytes per weight in all, dense
// fp16 2) and vnm_prefill runs nm24_prefill on it for m >= kVnmCopyMinM, with no per-call
// re-tiling (2:4 was faster than the gathered 64:2:8 kernel on all 7 benchmark shapes at m = 256,
// slower at m = 64).
inline constexpr int64_t kVnmExpandMinM = 2048;
inline constexpr int64_t kVnmCopyMinM = 256;
bool vnm_expandable(const VnmWeights& w);  // M % 4 == 0
bool vnm_prefill_expands(const VnmWeights& w, int64_t m);
bool vnm_prefill_copy_held(const VnmWeights& w, int64_t m);  // the held copy serves this m
// The expanded 2:4 weights' shape (pointers null) and the bytes of their values and metadata.
Nm24Weights vnm_expanded_shape(const VnmWeights& w);
Nm24Weights vnm_held_copy(const VnmWeights& w);  // the held copy as 2:4 weights
size_t vnm_expanded_values_bytes(const VnmWeights& w);
size_t vnm_expanded_meta_bytes(const VnmWeights& w);
// Device re-tiling into caller buffers in tile_nm24's layout (values: vnm_expanded_values_bytes,
// 16-byte aligned; meta: vnm_expanded_meta_bytes); cudaErrorInvalidValue for M % 4 != 0 or bad
// pointers.
cudaError_t vnm_expand_to_nm24(const VnmWeights& w, void* values, uint32_t* meta,
                               cudaStream_t stream);
cudaError_t vnm_prefill_expanded(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream);
// Host twin of vnm_expand_to_nm24 (the same bits): tile_nm24 of the 2:4 arrays read off a
// VnmTiled. Throws sparsa::Error for M % 4 != 0.
Nm24Tiled expand_vnm_tiling(const VnmTiled& t);

cudaError_t vnm_gemm(const VnmWeights& w, const GemmProblem& p, cudaStream_t stream);

// ---- owning device copies (checked wrappers; throw sparsa::Error on CUDA failure) ---------
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  void upload(const void* host, size_t bytes);
  void download(void* host, size_t bytes) const;

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

struct DeviceNm24 {
  // Fragments: `values` (and values_k too on sm_90a when SPARSA_PREFILL24=ss*, the opt-in of
  // session 6); ValuesK: only values_k.
  DeviceBuffer values, meta, values_k;
  Nm24Weights weights;
};
struct DeviceVnm {
  DeviceBuffer values, meta, columns;
  DeviceBuffer prefill_values, prefill_meta;  // the opt-in 2:4 copy (SPARSA_VNM_PREFILL_COPY=1)
  VnmWeights weights;
};
DeviceNm24 upload(const Nm24Tiled& tiled);  // in nm24_layout()
DeviceNm24 upload(const Nm24Tiled& tiled, Nm24Layout layout);
DeviceVnm upload(const VnmTiled& tiled);  // + the 2:4 prefill copy where vnm_prefill_copy_wanted
// SPARSA_VNM_PREFILL_COPY=1 (read once per process), M % 4 == 0 and the 2:4 wgmma kernel present.
bool vnm_prefill_copy_wanted(const VnmWeights& w);

// Throws sparsa::Error naming `what` when `status` is not cudaSuccess.
void check_cuda(cudaError_t status, const char* what);

}  // namespace sparsa::cuda
