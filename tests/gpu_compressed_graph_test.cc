// Session 7 of the compressed decode kernels (src/cuda/compressed_decode.cu): the launch with
// programmatic dependent launch (PDL) under a CUDA graph. A chain of products captured into one
// graph must give a direct call's bits; the first product is also checked against the double
// product of the codec's dequantised weights. (The session's measured-and-removed loop variants
// had their own tests here: the commit that adds bench/results/*-s7-run2.log.)
#ifdef SPARSA_WITH_CUDA

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "cuda/compressed_internal.h"
#include "cuda/decode_tuning.h"
#include "gpu_compressed_util.h"
#include "gpu_sparse_util.h"
#include "sparsa/cuda_compressed.h"
#include "sparse_matrices.h"

namespace sparsa::test {
namespace {

using cuda::check_cuda;
using cuda::ElemType;

constexpr double kTolerance = 1e-2;

struct VariantGuard {  // restores the process-wide variant and tuning after a test
  int variant = cuda::detail::compressed_variant();
  cuda::DecodeTuning tuning = cuda::decode_tuning();
  ~VariantGuard() {
    cuda::detail::set_compressed_variant(variant);
    cuda::set_decode_tuning(tuning);
  }
};

// A chain of three products, each one's fp16 Y the next one's X, captured into one CUDA graph
// (kernels launched with programmatic dependent launch unless `pdl` is off) on one shared
// workspace, replayed twice: every Y equals the same chain run as direct calls with a
// synchronize after each, bit for bit. A kernel that read X, Y or the workspace before the
// previous kernel had finished would differ.
void expect_graph_chain_matches(const Pattern& p, const char* spec, int64_t m, int ctas, bool pdl,
                                uint64_t seed) {
  SCOPED_TRACE(fmt::format("{} {} m={} ctas={} pdl={}", p.to_string(), spec, m, ctas, pdl));
  cuda::DecodeTuning tuning = cuda::decode_tuning();
  tuning.pdl = pdl;
  cuda::set_decode_tuning(tuning);
  const int64_t dims[4] = {1000, 640, 512, 1000};  // K of the first, then each N = the next K
  std::vector<cuda::DeviceCompressed> w;
  size_t ws_bytes = 16;
  for (int i = 0; i < 3; ++i) {
    const CompressedMatrix c =
        random_compressed(p, p.kind == PatternKind::NM ? FormatKind::NM : FormatKind::VNM, spec,
                          dims[i + 1], dims[i], seed + i, 10);
    w.push_back(cuda::upload(cuda::tile_compressed(c)));
    ws_bytes = std::max(ws_bytes, cuda::compressed_workspace_bytes(w.back().weights, m, ctas));
  }
  const Activations x = random_activations(m, dims[0], ElemType::F16, seed + 5);
  cuda::DeviceBuffer dx(m * dims[0] * 2), ws(ws_bytes);
  std::vector<uint16_t> xbits(m * dims[0]);
  for (int64_t t = 0; t < m; ++t)
    std::memcpy(xbits.data() + t * dims[0], x.bits.data() + t * x.ldx, dims[0] * 2);
  dx.upload(xbits.data(), xbits.size() * 2);
  check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
  std::vector<cuda::DeviceBuffer> ys;
  for (int i = 0; i < 3; ++i) ys.emplace_back(m * dims[i + 1] * 2);
  cudaStream_t stream;
  check_cuda(cudaStreamCreate(&stream), "stream");
  auto launch = [&](int i) {
    cuda::GemmProblem pr;
    pr.x = i == 0 ? dx.data() : ys[i - 1].data();
    pr.m = m;
    pr.ldx = dims[i];
    pr.y = ys[i].data();
    pr.ldy = dims[i + 1];
    pr.y_type = ElemType::F16;
    pr.workspace = ws.data();
    pr.workspace_bytes = ws.bytes();
    pr.ctas = ctas;
    return cuda::compressed_decode(w[i].weights, pr, stream);
  };
  auto poison = [&] {
    for (auto& y : ys) check_cuda(cudaMemsetAsync(y.data(), 0xff, y.bytes(), stream), "poison");
  };
  auto download = [&] {
    std::vector<std::vector<uint16_t>> out;
    for (auto& y : ys) {
      out.emplace_back(y.bytes() / 2);
      check_cuda(cudaMemcpy(out.back().data(), y.data(), y.bytes(), cudaMemcpyDeviceToHost), "y");
    }
    return out;
  };
  poison();
  for (int i = 0; i < 3; ++i) {
    check_cuda(launch(i), "direct call");
    check_cuda(cudaStreamSynchronize(stream), "direct call");
  }
  const auto direct = download();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
  for (int i = 0; i < 3; ++i) check_cuda(launch(i), "captured call");
  check_cuda(cudaStreamEndCapture(stream, &graph), "end capture");
  check_cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  for (int replay = 0; replay < 2; ++replay) {
    SCOPED_TRACE(fmt::format("replay {}", replay));
    poison();
    check_cuda(cudaGraphLaunch(exec, stream), "replay");
    check_cuda(cudaStreamSynchronize(stream), "replay");
    const auto got = download();
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(got[i] == direct[i]) << "product " << i << " differs";
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  // The first product against the double reference (the chain is not trivially equal).
  std::vector<float> y0(m * dims[1]);
  for (size_t i = 0; i < y0.size(); ++i) y0[i] = from_bits(direct[0][i], ElemType::F16);
  const CompressedMatrix c0 =
      random_compressed(p, p.kind == PatternKind::NM ? FormatKind::NM : FormatKind::VNM, spec,
                        dims[1], dims[0], seed, 10);
  EXPECT_LE(relative_error(y0, reference_dense(x, dequantised(c0), dims[1])), kTolerance);
}

TEST(GpuCompressedSession7, GraphWithPdlMatchesDirectCalls) {
  SPARSA_SKIP_WITHOUT_GPU();
  VariantGuard guard;
  uint64_t seed = 18000;
  cuda::detail::set_compressed_variant(1);  // the default loop
  for (const char* spec : {"int8", "int4", "codebook4"})
    for (int64_t m : {1, 5, 12})
      for (int ctas : {0, 3})
        expect_graph_chain_matches(nm_pattern(2, 4), spec, m, ctas, true, seed += 10);
  seed += 2 * 18 * 10;  // the seeds two removed variants took in the GPU runs of session 7
  expect_graph_chain_matches(vnm_pattern(64, 8), "int4", 3, 0, true, seed += 10);
  expect_graph_chain_matches(vnm_pattern(128, 16), "codebook4", 9, 5, true, seed += 10);
  expect_graph_chain_matches(nm_pattern(2, 4), "int8", 4, 0, false, seed += 10);
}

// Session 7, second helper: the wide CTAs (variant 16: one CTA of 16 warps per SM over pairs of
// row groups, codebook4 and int4) under PDL in a CUDA graph; the chain's N = 640 has an odd
// number of row groups (its last pair has no second half).
TEST(GpuCompressedSession7, WideCtasGraphMatchesDirectCalls) {
  SPARSA_SKIP_WITHOUT_GPU();
  VariantGuard guard;
  uint64_t seed = 18600;
  cuda::detail::set_compressed_variant(16);
  ASSERT_EQ(cuda::detail::compressed_variant(), 16);
  for (const char* spec : {"codebook4", "int4"})
    for (int64_t m : {1, 12})
      for (int ctas : {0, 3})
        expect_graph_chain_matches(nm_pattern(2, 4), spec, m, ctas, true, seed += 10);
}

// Session 8: variant 20 (kPair: split row groups joined by their late CTA or by the two late CTAs
// of a cluster of 2) under PDL in a CUDA graph: cluster launches with the PDL attribute, tagged
// words published and cleared within each call. With 6 CTAs the int8 chain's three products and
// the codebook4 chain's first one run the pair plan (joins of one CTA and of cluster pairs); m = 12
// and the resident plans run the lean kernel.
TEST(GpuCompressedSession8, PairJoinGraphMatchesDirectCalls) {
  SPARSA_SKIP_WITHOUT_GPU();
  VariantGuard guard;
  uint64_t seed = 21000;
  cuda::detail::set_compressed_variant(20);
  ASSERT_EQ(cuda::detail::compressed_variant(), 20);
  for (const char* spec : {"int8", "codebook4"})
    for (int64_t m : {1, 8, 12})
      for (int ctas : {0, 6})
        expect_graph_chain_matches(nm_pattern(2, 4), spec, m, ctas, true, seed += 10);
  expect_graph_chain_matches(nm_pattern(2, 4), "int8", 3, 6, false, seed += 10);
}

}  // namespace
}  // namespace sparsa::test

#endif  // SPARSA_WITH_CUDA
