// Process-wide tuning switches of the decode kernels (sparse_decode.cu), for tests and the
// benchmark's A/B comparisons. Defaults: the environment variables named below when set, else
// the values given here.
//
// pdl (SPARSA_DECODE_PDL, "0" off): programmatic dependent launch (sm_90). A decode kernel may
//   start while the kernel before it on the stream finishes: it prefetches its (constant)
//   weights, then waits for that kernel's completion before touching X, Y or the workspace.
//   Weights must therefore not be written by the kernel launched just before on the same stream.
// wide_gather (SPARSA_DECODE_WIDE, "0" off): V:2:M at m > 8 with M = 8 (or M = 16 on 8-warp
//   CTAs) gathers X with 16-byte loads of whole blocks (v10); off: the 2-byte gather (v9).
// two_sets (SPARSA_DECODE_TWO_SETS, "0" off): with the wide gather, V = 64 and M = 8 at m > 8
//   run 8-warp CTAs of 128 rows (two column sets share each 16-byte X load; v10b); off: 4 warps.
// Workspace sizes are planned with the settings at the time of the query: change wide_gather
// or two_sets only between calls that query the workspace size again.
#pragma once

namespace sparsa::cuda {

struct DecodeTuning {
  bool pdl = true;
  bool wide_gather = true;
  bool two_sets = true;
};

DecodeTuning decode_tuning();
void set_decode_tuning(const DecodeTuning& tuning);

}  // namespace sparsa::cuda
