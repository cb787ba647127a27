// Choosing V and M of a V:N:M pattern for a target speed-up ("Beyond 2:4", Zhao et al. 2024,
// arXiv 2410.16135, section "heuristic V and M selection": sift the (V, M) candidates by
// speed-up, then keep the one with the largest mask diversity). docs/results.md states the rule.
#pragma once

#include "sparsa/pattern.h"

namespace sparsa {

// Estimated GEMM speed-up of V:2:M over dense: the compute ratio M/2 times the efficiency of
// Spatha's kernel at that V, fitted to VENOM's RTX 3090 measurements (64:2:8 2.44-3.04x,
// 128:2:8 2.89-3.88x, midpoints / 4): 0.68 for V = 64, 0.85 for V = 128. V = 16 and 32 have no
// kernel and get no estimate (0).
double vnm_estimated_speedup(int v, int m);

// log2 of the mask diversity per weight: a V x M block can be masked in C(M,4) * 6^V ways
// (4 columns, then 2 of 4 in each row), so per weight log2(C(M,4)) / (V*M) + log2(6) / M.
// More diversity = more freedom to keep important weights = better accuracy at equal density.
double vnm_mask_diversity_bits(int v, int m);

struct VnmChoice {
  Pattern pattern;                // V:2:M
  double estimated_speedup = 0;   // vnm_estimated_speedup
  double diversity_bits = 0;      // vnm_mask_diversity_bits
};

// Phase 1: every (V, M) with V in {64, 128} and 5 <= M <= 32 whose estimated speed-up reaches
// `target`; phase 2: the one with the largest mask diversity (ties: smaller M, then smaller V).
// Throws sparsa::Error naming the target when it is not a number > 1 or no candidate reaches it.
VnmChoice choose_vnm(double target_speedup);

}  // namespace sparsa
