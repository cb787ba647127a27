// Process-wide tuning switches of the decode kernels (sparse_decode.cu), for tests and the
// benchmark's A/B comparisons. Defaults: the environment variables named below when set, else
// the values given here.
//
// pdl (SPARSA_DECODE_PDL, "0" off): programmatic dependent launch (sm_90). A decode kernel may
//   start while the kernel before it on the stream finishes: it prefetches its (constant)
//   weights, then waits for that kernel's completion before touching X, Y or the workspace.
//   Weights must therefore not be written by the kernel launched just before on the same stream.
#pragma once

namespace sparsa::cuda {

struct DecodeTuning {
  bool pdl = true;
};

DecodeTuning decode_tuning();
void set_decode_tuning(const DecodeTuning& tuning);

}  // namespace sparsa::cuda
