// The shapes the V:2:M -> 2:4 re-tiling tests share (tests/vnm_expand_tiling_test.cc on the host,
// tests/gpu_vnm_expand_test.cc on the device).
#pragma once
#ifdef SPARSA_WITH_CUDA

#include <fmt/format.h>

#include <string>

#include "gpu_sparse_util.h"

namespace sparsa::test::vnm_expand {

using cuda::ElemType;

struct Case {
  int64_t rows, cols;
  int v, mcols;
  ElemType type = ElemType::F16;
};

inline const Case kCases[] = {
    {77, 513, 64, 8},                    // ragged rows and K
    {300, 2000, 128, 16},                // 4 groups per block
    {128, 1024, 64, 4},                  // M = 4: one group per block
    {200, 777, 16, 12, ElemType::BF16},  // 3 groups per block, K % M != 0
    {33, 100, 32, 8},                    // K below one 2:4 chunk
    {640, 1500, 64, 8, ElemType::BF16},  // several row tiles and chunks
    {16, 8, 16, 8},                      // one block
    {129, 4096, 128, 8},                 // K of the benchmark shapes
};

inline std::string describe(const Case& c) {
  return fmt::format("{}:2:{} N={} K={} {}", c.v, c.mcols, c.rows, c.cols, type_name(c.type));
}

inline cuda::VnmTiled tiled(const Case& c, const SparseWeights& w) {
  return cuda::tile_vnm(w.columns.data(), w.values.data(), w.meta.data(), c.rows, c.cols, c.v,
                        c.mcols, c.type);
}

// A case's random weights, their V:2:M tiling and the host twin's 2:4 tiling of it.
struct Expanded {
  SparseWeights w;
  cuda::VnmTiled vnm;
  cuda::Nm24Tiled twin;
};
inline Expanded expand_case(const Case& c, uint64_t seed) {
  Expanded e;
  e.w = random_vnm(c.rows, c.cols, c.v, c.mcols, c.type, seed);
  e.vnm = tiled(c, e.w);
  e.twin = cuda::expand_vnm_tiling(e.vnm);
  return e;
}

}  // namespace sparsa::test::vnm_expand

#endif  // SPARSA_WITH_CUDA
