// The tagged workspace fix-up of the decode kernels (v13, decode_tuning().tagged_fixup,
// src/cuda/split_fixup.cuh): randomized ragged shapes on every decode path (2:4, staged and
// register-gather V:2:M, 1-, 2-, 4- and 8-warp CTAs) with forced stream-K splits, against the
// double CPU reference and, bit for bit, against the counter protocol (same summation order).
// Every call shares one workspace whose partial region starts out filled with garbage (only the
// counters must be zero), as it would after other kernels: after each tagged call no word of the
// partial region holds the tag, and the words it consumed were cleared.
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

#include "cuda/decode_tuning.h"
#include "cuda/decode_workspace.h"
#include "gpu_sparse_util.h"

namespace sparsa::test {
namespace {

using cuda::ElemType;

struct Kind {
  int v, bm;  // v = 0: 2:4
};

// Rows per CTA of the decode kernels (sparse_decode.cu rows_per_cta, wide gather and two sets on).
int rows_per_cta(const Kind& k, int64_t m) {
  if (k.v == 0) return 64;
  if (m > 8 && k.v >= 128) return 128;
  if (m > 8 && k.v == 64 && k.bm == 8) return 128;
  return std::min(k.v, 64);
}

struct Words {
  int64_t tagged = 0, zero = 0;
};

// Partial-region words (after the fixed counter region) holding the tag, and zero words.
Words scan_partials(const cuda::DeviceBuffer& ws) {
  const size_t off = cuda::detail::kCounterRegion;
  std::vector<uint64_t> w((ws.bytes() - off) / 8);
  std::vector<unsigned char> raw(ws.bytes());
  ws.download(raw.data(), raw.size());
  std::memcpy(w.data(), raw.data() + off, w.size() * 8);
  Words out;
  for (uint64_t v : w) {
    out.tagged += static_cast<uint32_t>(v >> 32) == cuda::detail::kPartialTag;
    out.zero += v == 0;
  }
  return out;
}

TEST(GpuDecode, TaggedFixupMatchesCounterFixup) {
  SPARSA_SKIP_WITHOUT_GPU();
  const TuningRestore restore;
  const Kind kinds[] = {{0, 0}, {64, 8}, {128, 16}, {64, 5}, {16, 4}, {32, 10}, {128, 8}};
  const ElemType y_types[] = {ElemType::F32, ElemType::F16, ElemType::BF16};
  // One workspace for every call: counters zero, partials garbage (no tag).
  cuda::DeviceBuffer ws(size_t{16} << 20);
  cuda::check_cuda(cudaMemset(ws.data(), 0xab, ws.bytes()), "fill workspace");
  cuda::check_cuda(cudaMemset(ws.data(), 0, cuda::detail::kCounterRegion), "zero counters");
  std::mt19937_64 rng(3100);
  uint64_t seed = 3100;
  for (int round = 0; round < 28; ++round) {
    const Kind& kind = kinds[round % 7];
    const int64_t m = 1 + static_cast<int64_t>(rng() % 16);
    const int64_t rows = 1 + static_cast<int64_t>(rng() % 1300);
    const int64_t cols = 40 + static_cast<int64_t>(rng() % 4000);
    const ElemType type = rng() % 2 ? ElemType::BF16 : ElemType::F16;
    const ElemType y_type = y_types[rng() % 3];
    const int64_t groups = (rows + 127) / 128 * 128 / rows_per_cta(kind, m);
    // Forced splits: a few CTAs (several groups each, ragged cuts), more CTAs than groups (every
    // group split, at ragged places), or the default plan.
    const int choice = static_cast<int>(rng() % 4);
    const int ctas = choice == 0   ? 0
                     : choice == 1 ? 2 + static_cast<int>(rng() % 6)
                                   : static_cast<int>(groups + 1 + rng() % (2 * groups + 3));
    SCOPED_TRACE(fmt::format("V={} M={} N={} K={} m={} {}->{} ctas={} groups={}", kind.v, kind.bm,
                             rows, cols, m, type_name(type), type_name(y_type), ctas, groups));
    const SparseWeights w = kind.v == 0 ? random_nm24(rows, cols, type, seed += 10)
                                        : random_vnm(rows, cols, kind.v, kind.bm, type, seed += 10);
    cuda::DeviceNm24 nm;
    cuda::DeviceVnm vn;
    if (kind.v == 0) {
      nm = cuda::upload(cuda::tile_nm24(w.values.data(), w.meta.data(), rows, cols, type));
    } else {
      vn = cuda::upload(cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), rows,
                                       cols, kind.v, kind.bm, type));
    }
    const size_t need = kind.v == 0 ? cuda::nm24_workspace_bytes(nm.weights, m, ctas)
                                    : cuda::vnm_workspace_bytes(vn.weights, m, ctas);
    ASSERT_LE(need, ws.bytes());
    const int64_t ldy = rows + 4;
    const size_t elem = y_type == ElemType::F32 ? 4 : 2;
    cuda::DeviceBuffer dy(m * ldy * elem);
    // Two different X on the same plan: a stale tag of the first call would feed the second.
    for (int xi = 0; xi < 2; ++xi) {
      const Activations x = random_activations(m, cols, type, seed + 1 + xi);
      const std::vector<float> ref = reference_gemm(x, w);
      cuda::DeviceBuffer dx(x.bits.size() * 2);
      dx.upload(x.bits.data(), x.bits.size() * 2);
      std::vector<unsigned char> raw[2];
      for (const bool tagged : {true, false}) {
        SCOPED_TRACE(fmt::format("x {} {}", xi, tagged ? "tagged" : "counter"));
        cuda::DecodeTuning tuning = restore.was;
        tuning.cluster = false;  // split groups take the workspace
        tuning.wide_gather = tuning.two_sets = true;
        tuning.tagged_fixup = tagged;
        cuda::set_decode_tuning(tuning);
        // The first X starts on garbage partials (as other kernels leave them); the second on
        // whatever the first X's calls left.
        if (xi == 0)
          cuda::check_cuda(cudaMemset(static_cast<char*>(ws.data()) + cuda::detail::kCounterRegion,
                                      0xab, ws.bytes() - cuda::detail::kCounterRegion),
                           "refill partials");
        const Words before = scan_partials(ws);
        cuda::GemmProblem p;
        p.x = dx.data();
        p.m = m;
        p.ldx = x.ldx;
        p.y = dy.data();
        p.ldy = ldy;
        p.y_type = y_type;
        p.workspace = ws.data();
        p.workspace_bytes = ws.bytes();
        p.ctas = ctas;
        cuda::check_cuda(cudaMemset(dy.data(), 0xff, dy.bytes()), "poison y");
        cuda::check_cuda(kind.v == 0 ? cuda::nm24_decode(nm.weights, p, nullptr)
                                     : cuda::vnm_decode(vn.weights, p, nullptr),
                         "decode");
        cuda::check_cuda(cudaDeviceSynchronize(), "decode");
        auto& out = raw[tagged ? 0 : 1];
        out.resize(dy.bytes());
        dy.download(out.data(), out.size());
        bool padding = true;
        const std::vector<float> y = unpack_y(out, m, rows, ldy, y_type, padding);
        EXPECT_TRUE(padding) << "wrote past column N of y";
        const double err = relative_error(y, ref);
        EXPECT_LE(err, 1e-2);
        EXPECT_FALSE(std::isnan(err)) << "unwritten or NaN outputs";
        const Words after = scan_partials(ws);
        EXPECT_EQ(after.tagged, 0) << "tagged partial words left in the workspace";
        // More CTAs than groups (and >= 2 K chunks a group) split some group: its later CTAs
        // published words, which the group's first CTA cleared (new zero words on the garbage).
        if (tagged && ctas > groups && cols >= 2048 && xi == 0) {
          EXPECT_GE(after.zero, before.zero + m) << "no partial word was published and cleared";
        }
      }
      EXPECT_TRUE(raw[0] == raw[1]) << "tagged and counter fix-ups differ";
    }
  }
}

}  // namespace
}  // namespace sparsa::test

#else  // no CUDA in this build

#include <gtest/gtest.h>
TEST(GpuDecodeTagged, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }

#endif
