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
// cluster (SPARSA_DECODE_CLUSTER, "0" off): when the default plan splits every row group over the
//   same number s = 2..8 of CTAs, launch them as thread-block clusters of s CTAs and reduce the
//   partial sums through distributed shared memory (v11) instead of the workspace, its arrival
//   counter and L2 round trips; off (or when the clusters do not fit at once): the workspace.
// cluster_shrink (SPARSA_DECODE_SHRINK, "0" off): at m <= 8, when the default plan's clusters of
//   s CTAs do not fit at once (H100: at most 62 clusters of 4 at 2 CTAs per SM, 79 of 3), use the
//   largest s' < s whose clusters of groups x s' CTAs do, instead of the workspace fix-up (v11e).
// cap_waves (SPARSA_DECODE_CAP, "0" off): on every path, when whole splits of s >= 2 CTAs per row
//   group would need more CTAs than fit at once and each resident CTA still gets >= 4 units, run
//   all-resident stream-K instead of a second, partial wave (v11; the register-gather path does
//   so at any s since v9).
// (lean_gather, SPARSA_DECODE_LEAN, switched v12's lean wide gather against v11's until session 6;
//   v11's is gone: 1-6% slower at m = 16 on every V:2:M record, same bits.)
// tagged_fixup (SPARSA_DECODE_TAGGED, "0" off): the workspace fix-up of a split row group without
//   the arrival counter (v13): the CTAs after the group's first store their partial sums tagged
//   in 64-bit words and go on, and the group's first CTA (whose range ends in the group) waits for
//   the tags, sums in CTA order (the same bits as the counter protocol) and clears the tags. No
//   release fence, atomic or barrier. Used only when every CTA of the launch fits on the GPU at
//   once (the first CTA waits for later ones); for default plans only on stream-K plans with <= 8
//   units per CTA, where it measured faster (whole splits measured slower: sparse_decode.cu
//   base_params); with forced CTA counts whenever on. Off: the counter protocol everywhere.
// fill (SPARSA_DECODE_FILL, "0" off; session 7): V:2:M default plans of whole row groups that
//   spill 0.1-0.9 of a second wave of CTAs run all-resident stream-K instead, where that gives
//   <= 8 units per CTA (then the tagged fix-up; cap_waves covers >= 4 units per CTA on every path).
// trim (SPARSA_DECODE_TRIM, "0" off; session 7): V:2:M stream-K default plans whose busiest CTA
//   has >= 4 units take the fewest CTAs that keep that count (the busiest CTA sets the time; the
//   freed slots let the next kernel start early under programmatic dependent launch).
//   (session 7 also measured, and dropped, `narrow`: 32-row staged CTAs on the N = 4096 m = 1
//   products, slower because clusters of 4 do not fit at 4 CTAs per SM either.)
// ksplit (SPARSA_DECODE_KSPLIT, "0" off; session 8): at m <= 8, where the default plan splits
//   row groups over CTAs and rows / 16 CTAs fill 3/4 to all of the resident slots (H100: N =
//   3072..4224), run 16-row CTAs whose 4 warps split K (warp w: chunks 4 j + w) and sum their
//   accumulators in shared memory at the end: one CTA per 16 rows, no workspace, cluster or
//   counter fix-up. 2:4 (both layouts) and staged V:2:M, where their shared memory fits two CTAs
//   per SM (2:4 m <= 4, V:2:M m = 1 for M <= 16). Staged V:2:M only where a CTA has <= 3 units
//   of 4 chunks (all prefetched by the prologue): on longer K its gather costs more than the
//   fix-up it saves. H100 same-run A/B (session 8, graph): 2:4 m = 1 4096 x 4096 8.6 -> 7.6 us,
//   4096 x 14336 24.5 -> 23.0; 64:2:8 4096^2 7.1 -> 5.8; 128:2:16 4096^2 5.1 -> 3.6.
// ksplit_long (SPARSA_DECODE_KSPLIT_LONG, "1" on; session 8, off by default): with ksplit, staged
//   V:2:M takes K-split CTAs at any K (for the A/B); with ksplit_m16, so does m = 9..16.
// ksplit32 (SPARSA_DECODE_KSPLIT32, "0" off; session 8b): with ksplit, staged V:2:M with V >= 32
//   on the K the 16-row rule leaves out (> kStages - 1 units of 4 chunks) runs 32-row K-split
//   CTAs of 8 warps instead (2 row tiles x 4 K slices, one CTA per SM at N = 4096), where their
//   shared memory fits (64:2:8 m <= 3, 128:2:16 m <= 2): each gathered X chunk serves 32 rows
//   instead of 16. Takes precedence over ksplit_long there. H100 same-run A/B (session 8b,
//   graph | per call, us): 64:2:8 m = 1 4096 x 11008 12.23 -> 11.52 | 16.51 -> 15.36, 4096 x
//   14336 14.05 -> 13.05 | 18.30 -> 17.02; 128:2:16 4096 x 14336 9.36 -> 8.63 | 13.54 -> 12.77.
// ksplit_m16 (SPARSA_DECODE_KSPLIT_M16, "0" off; session 10): with ksplit, V:2:M at m = 9..16
//   with M = 8 and V >= 32 (the wide gather), where the default plan splits row groups over CTAs
//   (fix-up through the workspace: every N = 4096 product) and N / 32 CTAs fill 3/4 to all of the
//   SMs: 32-row K-split CTAs of 8 warps (2 row tiles x 4 K slices, one per SM), each thread
//   gathering one block of one of the unit's 4 chunks for all 16 tokens with 16-byte loads; the
//   slices add in shared memory, no workspace, counter or cluster. Only where a CTA has <= 2
//   units of 4 chunks (K <= 4096 at M = 8; ksplit_long: any K): each X load serves 32 rows
//   instead of 128, which costs more per unit than the fix-up saves on longer K. H100 same-run
//   A/B (session 10, 64:2:8 m = 16, graph | per call, us): 4096 x 4096 8.17 -> 6.75 | 12.42 ->
//   10.46; at any K 4096 x 11008 14.74 -> 16.16, 4096 x 14336 17.30 -> 21.87.
// ktail (SPARSA_DECODE_KTAIL, "0" off; session 11): default plans that split row groups over CTAs
//   (stream-K, whole splits), with fewer row groups than resident CTAs and all resident: each row
//   group's last `tail` units run on its own CTA (the owner), and the first K - tail units of
//   every group are divided over helper CTAs in all the other slots. A helper publishes each
//   head piece as tagged words when it ends and never waits; the owner adds the pieces to its
//   sums after its loop and writes Y. Taken with the smallest tail (at most the busiest CTA's
//   units) whose helpers have at most 4/5 of tail - 1 units (a helper's unit, in a new group
//   every head, measured 1.15-1.25x an owner's), so every piece is published before its owner
//   reads it; the stream-K fix-up waits instead for CTAs that end with the group's first.
//   H100 (session 11): see docs/kernels-gpu.md "Session 11".
// ktail_early (SPARSA_DECODE_KTAIL_EARLY, "0" off; session 11): a ktail owner at m <= 8 loads its
//   helpers' words (up to 2 slots) at the start of its last unit instead of after its loop, so
//   that L2 round trip overlaps the unit (the helpers are done by then); the same sums in the
//   same order. H100 same-run A/B: 64:2:8 11008 x 4096 m = 1 graph 10.79 -> 10.44 us, per call
//   16.42 -> 15.81.
// ksplit_multi (SPARSA_DECODE_KSPLIT_MULTI, "0" off; session 12): with ksplit, a default plan at
//   m <= 8 that splits row groups over CTAs takes 16-row K-split CTAs also where there are more
//   16-row tiles than resident CTAs (N > 4224 on a 132-SM GPU): all resident CTAs, each a
//   contiguous run of whole tiles, so no cross-CTA fix-up; not where ktail's owner / helper plan
//   applies. Staged V:2:M only at short K, as ksplit. H100 same-run A/B: docs/kernels-gpu.md
//   "Session 12".
// ksplit32_multi (SPARSA_DECODE_KSPLIT32_MULTI, "0" off; session 12): with ksplit32, staged V:2:M
//   at m <= 8 with V >= 32 runs 32-row K-split CTAs (8 warps, 2 row tiles x 4 K slices) also
//   where the 32-row tiles outnumber the resident CTAs, at any K: every resident CTA a contiguous
//   run of whole tiles, no cross-CTA fix-up; not where ktail applies. Taken before ksplit_multi's
//   16-row CTAs (a gathered X chunk serves 32 rows instead of 16). H100 same-run A/B (graph):
//   128:2:16 11008 x 4096 m = 1 6.9 -> 6.4 us, 8192 x 28672 m = 1 24.8 -> 23.1.
// prologue_one (SPARSA_DECODE_PROLOGUE_ONE, "0" off; session 12): V:2:M at m <= 8 issues fewer
//   units' weights before the programmatic-dependent-launch wait than the kStages - 1 = 3 of
//   2:4, m > 8 and the switch off: one on K-split plans of <= 4 units per CTA (commit group 0
//   then holds unit 0 alone), two on the others. Same sums, same bits. H100 same-run A/B (1 / 2 /
//   3 forced everywhere, graph): 128:2:16 4096 x 11008 m = 1 6.5 / 7.2 / 7.6 us, 64:2:8 4096^2
//   5.1 / 5.7 / 5.7, 128:2:16 28672 x 8192 25.2 / 24.5 / 25.5; 2:4 and m = 16 best at 3.
//   prologue_units (A/B runs only): > 0 forces that many everywhere.
// Workspace sizes are planned with the settings at the time of the query: change wide_gather
// or two_sets only between calls that query the workspace size again (likewise switching ksplit,
// ksplit32, ksplit_m16, ksplit_multi or ksplit32_multi off: their plans need less workspace
// than the ones they replace).
#pragma once

namespace sparsa::cuda {

struct DecodeTuning {
  bool pdl = true;
  bool wide_gather = true;
  bool two_sets = true;
  bool cluster = true;
  bool cap_waves = true;
  bool cluster_shrink = true;
  bool tagged_fixup = true;
  bool fill = true;
  bool trim = true;
  bool ksplit = true;
  bool ksplit_long = false;
  bool ksplit32 = true;
  bool ksplit_m16 = true;
  bool ktail = true;
  bool ktail_early = true;
  bool ksplit_multi = true;
  bool prologue_one = true;
  int prologue_units = 0;  // > 0: that many units before the wait on every plan (A/B runs only)
  bool ksplit32_multi = true;
};

DecodeTuning decode_tuning();
void set_decode_tuning(const DecodeTuning& tuning);

// Decode launches that ran as thread-block clusters (the `cluster` fix-up) since the process
// started: lets tests and the benchmark see which fix-up a call took.
unsigned long long decode_cluster_launches();
// Decode launches of K-split CTAs (`ksplit`) since the process started.
unsigned long long decode_ksplit_launches();
// Decode launches of owner / helper plans (`ktail`) since the process started.
unsigned long long decode_ktail_launches();

// Diagnostics for the benchmark (SPARSA_DECODE_TIMELINE): while set, every decode launch has each
// CTA's thread 0 write kTimelineStamps %globaltimer values (ns) to buffer[cta * kTimelineStamps
// + k]: entry, after the wait for the previous grid, unit 0 landed, start of its last row-group
// flush, exit. The buffer must hold that many values for every CTA of a launch. Null: off.
inline constexpr int kTimelineStamps = 5;
void set_decode_timeline(unsigned long long* device_buffer);

}  // namespace sparsa::cuda
