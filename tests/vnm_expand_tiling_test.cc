// The host twin of the V:2:M -> 2:4 re-tiling (src/cuda/vnm_expand_tiling.cc): its tiling, decoded
// back to a dense matrix by walking tile_nm24's documented layout forwards, equals the V:2:M
// weights it came from. Host code only, so it runs in CI (built whenever CUDA is found; the
// device side is tests/gpu_vnm_expand_test.cc).
#ifdef SPARSA_WITH_CUDA

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sparsa/error.h"
#include "vnm_expand_cases.h"

namespace sparsa::test::vnm_expand {
namespace {

// The dense [rows, cols] matrix a 2:4 tiling holds, walking tiling.cc's layout forwards: value
// a[i] of lane 4g + t in k-step s is row g + 8((i >> 1) & 1) of the tile, group s * 8 + t +
// 4 (i >> 2), slot i & 1; metadata word j of lane 4g + t in chunk kc carries k-step
// kc * 8 + 2j + (t >> 1), groups 4 (t & 1) .. + 3, row g low and g + 8 high. Sets `ordered` false
// where a nibble's idx0 >= idx1, `outside` where a nonzero sits past column `cols`.
std::vector<float> dense_from_nm24(const cuda::Nm24Tiled& t, bool& ordered, bool& outside) {
  const int64_t ksteps = t.cols_padded / 32, kchunks = t.cols_padded / 256;
  const int64_t groups = t.cols_padded / 4;
  std::vector<uint32_t> nibbles(static_cast<size_t>(t.rows_padded * groups));
  for (int64_t rt = 0; rt < t.rows_padded / 16; ++rt)
    for (int64_t kc = 0; kc < kchunks; ++kc)
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 4; ++j) {
          const int g = lane >> 2, tt = lane & 3;
          const uint32_t word = t.meta[((rt * kchunks + kc) * 32 + lane) * 4 + j];
          const int64_t s = kc * 8 + 2 * j + (tt >> 1);
          for (int n = 0; n < 4; ++n) {
            const int64_t q = s * 8 + 4 * (tt & 1) + n;
            nibbles[(rt * 16 + g) * groups + q] = (word >> (4 * n)) & 0xf;
            nibbles[(rt * 16 + g + 8) * groups + q] = (word >> (16 + 4 * n)) & 0xf;
          }
        }
  std::vector<float> dense(static_cast<size_t>(t.rows * t.cols), 0.0f);
  ordered = true;
  outside = false;
  for (int64_t rt = 0; rt < t.rows_padded / 16; ++rt)
    for (int64_t s = 0; s < ksteps; ++s)
      for (int lane = 0; lane < 32; ++lane)
        for (int i = 0; i < 8; ++i) {
          const int g = lane >> 2, tt = lane & 3;
          const int64_t row = rt * 16 + g + 8 * ((i >> 1) & 1);
          const int64_t q = s * 8 + tt + 4 * (i >> 2);
          const uint32_t nib = nibbles[row * groups + q];
          if ((nib & 3) >= (nib >> 2)) ordered = false;
          const int64_t col = q * 4 + ((nib >> (2 * (i & 1))) & 3);
          const uint16_t bits = t.values[((rt * ksteps + s) * 32 + lane) * 8 + i];
          if ((bits & 0x7fff) == 0) continue;
          if (row >= t.rows || col >= t.cols) {
            outside = true;
            continue;
          }
          dense[row * t.cols + col] = from_bits(bits, t.type);
        }
  return dense;
}

TEST(VnmExpand, HostTwinHoldsTheSameWeights) {
  uint64_t seed = 4400;
  for (const Case& c : kCases) {
    SCOPED_TRACE(describe(c));
    const Expanded x = expand_case(c, seed += 7);
    const cuda::Nm24Tiled& e = x.twin;
    const SparseWeights& w = x.w;
    EXPECT_EQ(e.rows, c.rows);
    EXPECT_EQ(e.cols, c.cols);
    EXPECT_EQ(e.rows_padded, x.vnm.rows_padded);
    EXPECT_EQ(e.cols_padded, (c.cols + 255) / 256 * 256);
    bool ordered = false, outside = true;
    const std::vector<float> dense = dense_from_nm24(e, ordered, outside);
    EXPECT_TRUE(ordered) << "a nibble with idx0 >= idx1";
    EXPECT_FALSE(outside) << "a nonzero past the matrix";
    int64_t differ = 0;
    for (size_t i = 0; i < dense.size(); ++i) differ += dense[i] != w.dense[i];
    EXPECT_EQ(differ, 0) << "weights that differ from the V:2:M matrix";
  }
}

TEST(VnmExpand, HostTwinRefusesMNotAMultipleOfFour) {
  const Case c{64, 100, 64, 5};
  const SparseWeights w = random_vnm(c.rows, c.cols, c.v, c.mcols, c.type, 17);
  try {
    cuda::expand_vnm_tiling(tiled(c, w));
    FAIL() << "M = 5 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("M = 5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sparsa::test::vnm_expand

#else
#include <gtest/gtest.h>
TEST(VnmExpand, NotBuilt) { GTEST_SKIP() << "sparsa was built without CUDA"; }
#endif  // SPARSA_WITH_CUDA
