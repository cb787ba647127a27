// Token tiles of the 2:4 wgmma prefill kernels (sm_90a): both the register-A kernel
// (wgmma_prefill.cu, v5g: 128 tokens; v9: 192) and the shared-memory-A kernel (wgmma_prefill_ss.cu,
// v8) run 256-row CTA tiles of 128 or 192 tokens, one CTA per SM, and pick the tile by wave count.
#pragma once

#include <cstdint>

#include "cuda/ssc_tail.h"
#include "sparsa/cuda_kernels.h"

namespace sparsa::cuda {

// 128 or 192: the token tile with the fewer (waves x tokens per tile x time per token) for a
// 256-row CTA tile over rows_padded weight rows and m tokens, one CTA per SM; `per_token_192` is
// the time per token of a 192-token tile relative to a 128-token one on full waves.
int nm24_tokens_by_waves(int64_t rows_padded, int64_t m, double per_token_192);

// SPARSA_PREFILL24 for the register-A kernel: v5g128 -> 128 (v5g as before session 6, v9),
// v5g192 -> 192, v5gauto -> -1; unset or anything else -> the default, -1: the tile by wave
// count (v9, H100 same run: 0.963 of v5g-128's time in the median of the 14 benchmark records,
// docs/kernels-gpu.md "Session 6, v9").
int nm24_prefill_regA_tokens();
inline constexpr int kNm24RegADefaultTokens = -1;

// nm24_prefill_wgmma with the token tile given: 128, 192, -1 (by wave count) or 0
// (nm24_prefill_regA_tokens()). cudaErrorInvalidValue for any other tile.
cudaError_t nm24_prefill_wgmma_tokens(const Nm24Weights& w, const GemmProblem& p,
                                      cudaStream_t stream, int tokens_per_tile);

// ---- v10 (session 7): split-K of the register-A kernel (nm24_prefill_wgmma_split) ----------
// SPARSA_PREFILL24_SPLIT, for same-run A/B: unset / "auto" -> -1 (nm24_split_rule, the default),
// "0" / "1" / "off" -> 1 (v9, unsplit), "2".."8" -> that many splits (forced: a call whose
// workspace cannot hold the partials fails with cudaErrorInvalidValue); anything else -> auto.
int nm24_prefill_split_mode();
// The automatic split count: the largest s <= kPrefillMaxSplit with tiles x s <= sms (one CTA
// per SM) and >= 2 metadata chunks (8 stages of 64 columns) per split; 1 when none is >= 2, or
// when nm24_split_time_us (session 8: a model fit to the H100 run) says that s splits are slower
// than none for these weight bytes (values, metadata and X) and partial bytes per split
// (m x rows_padded x 4). With both byte counts 0 the model never refuses.
int nm24_split_rule(int64_t tiles, int64_t kchunks, int sms, double weight_bytes = 0,
                    double partial_bytes = 0);
double nm24_split_time_us(int64_t tiles, int64_t kchunks, int s, double weight_bytes,
                          double partial_bytes);
double nm24_split_weight_bytes(const Nm24Weights& w, int64_t m);
// The split count nm24_prefill_wgmma_split(w, p, ., split, tokens_per_tile) takes for m tokens
// when the workspace holds its partials (a forced count is capped at the number of chunks); 0
// for an invalid request.
int nm24_prefill_splits(const Nm24Weights& w, int64_t m, int split, int tokens_per_tile = 0);

// ---- v11 (session 10): split-K of the last partial wave only (nm24_prefill_wgmma_tail) -------
// A grid of tiles > sms unsplit CTA tiles (one CTA per SM) leaves r = tiles % sms tiles for a
// last, partial wave. The plan splits those r tiles s ways over K: s = min(kPrefillMaxSplit,
// sms / r, kchunks / 2), so the tail's r s pieces fit one wave and each has >= 2 chunks; the
// pieces run first in the grid, the last one of a tile to finish sums its s partials in split
// order into Y. {1, 0} (no tail split) when tiles <= sms, r = 0 or s < 2.
struct Nm24TailPlan {
  int splits = 1;     // pieces per tail tile
  int64_t tiles = 0;  // tail tiles (the last ones of the grouped raster order)
};
Nm24TailPlan nm24_tail_plan(int64_t tiles, int64_t kchunks, int sms);
// SPARSA_PREFILL24_TAIL: "1" -> on, "0" -> off (v9's unsplit grid as before session 10), unset
// or anything else -> kNm24TailDefault. On, nm24_prefill_wgmma (automatic split, unsplit grid,
// fragment layout) takes the tail split where the plan has one and the workspace holds its
// partials (nm24_prefill_workspace_bytes counts them; a shorter workspace runs v9). Default on
// since session 10: H100 same run, 0.894-0.999 of v9's time per call on the 8 of 14 benchmark
// records at m >= 2048 that have a tail split (median 0.976), the others unchanged
// (bench/results/gemm-h100-2026-11-23-pre10-run1-{default,tail}.json).
bool nm24_prefill_tail_mode();
inline constexpr bool kNm24TailDefault = true;
// The plan for w and m with a token tile (0: as nm24_prefill_wgmma picks it) and an SM count
// (0: the device's), and the workspace it needs (counters + r s pieces x tokens x 256 floats; 0
// without a tail split).
Nm24TailPlan nm24_prefill_tail_plan(const Nm24Weights& w, int64_t m, int tokens_per_tile, int sms);
size_t nm24_prefill_tail_workspace_bytes(const Nm24Weights& w, int64_t m, int tokens_per_tile,
                                         int sms);
// The tail path forced, planned for `sms` SMs (tests pass a few so that small shapes have several
// waves; the launch itself does not depend on it). The unsplit kernel where the plan has no tail
// split. cudaErrorInvalidValue for values_k-only weights (fragment layout only), sms < 1, or a
// workspace that is null, misaligned or short of nm24_prefill_tail_workspace_bytes.
cudaError_t nm24_prefill_wgmma_tail(const Nm24Weights& w, const GemmProblem& p, cudaStream_t stream,
                                    int tokens_per_tile, int sms);

// v12 (wgmma_prefill_ssc.cu): its streamed tail for w and m over the device's resident clusters
// (ssc_tail.h; what nm24_prefill_wgmma_ssc takes when the workspace holds it; none unless
// SPARSA_PREFILL24_SSC_TAIL=1), and that cluster count.
Nm24SscTailPlan nm24_prefill_ssc_tail_plan(const Nm24Weights& w, int64_t m, int cluster = 2);
int nm24_prefill_ssc_resident_clusters(int cluster = 2);

}  // namespace sparsa::cuda
