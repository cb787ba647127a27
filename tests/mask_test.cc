// Masks, validation, apply_mask and prune, each checked against brute-force references written
// here with full sorts (the library uses selection and rank counting).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "sparsa/error.h"
#include "sparsa/half.h"
#include "sparsa/pattern.h"
#include "sparsa/prune.h"
#include "test_util.h"

namespace sparsa {
namespace {

using Mask = std::vector<uint8_t>;

struct Shape {
  int64_t rows, cols;
};

// Tiny, ragged and round shapes.
std::vector<Shape> shapes() {
  std::vector<Shape> out{{1, 1},   {3, 5},   {1, 7},   {7, 1},    {2, 4},    {16, 16}, {17, 33},
                         {33, 19}, {64, 64}, {70, 70}, {129, 40}, {200, 37}, {5, 130}, {130, 21}};
  std::mt19937_64 rng(11);
  for (int i = 0; i < 6; ++i) out.push_back({int64_t(1 + rng() % 150), int64_t(1 + rng() % 90)});
  return out;
}

// Random values with many repeated magnitudes (not all equal): +-0.1 .. +-0.5.
std::vector<float> tied_values(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> v(count);
  for (auto& x : v) x = float(1 + rng() % 5) * 0.1f * (rng() % 2 ? 1.0f : -1.0f);
  return v;
}

std::vector<float> magnitudes(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

// Scores for a test case: random magnitudes or tied magnitudes.
std::vector<float> scores_for(Shape s, uint64_t seed, bool tied) {
  const size_t n = size_t(s.rows * s.cols);
  return magnitudes(tied ? tied_values(n, seed) : test::random_values(n, seed));
}

std::vector<float> masked(std::span<const float> w, const Mask& mask) {
  std::vector<float> out(w.begin(), w.end());
  for (size_t i = 0; i < out.size(); ++i)
    if (!mask[i]) out[i] = 0.0f;
  return out;
}

int64_t kept(const Mask& mask) { return std::count(mask.begin(), mask.end(), 1); }

// Indices 0..n-1 ordered best first: score descending, then index ascending.
template <typename T>
std::vector<int64_t> best_first(const std::vector<T>& scores) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : a < b;
  });
  return order;
}

// Keeps all but the `prune` worst of `scores`.
template <typename T>
Mask ref_keep_best(const std::vector<T>& scores, int64_t prune) {
  Mask keep(scores.size(), 0);
  const auto order = best_first(scores);
  for (size_t i = 0; i + prune < order.size(); ++i) keep[order[i]] = 1;
  return keep;
}

int64_t ref_count(double sparsity, int64_t n) { return int64_t(std::floor(sparsity * n + 0.5)); }

Mask ref_nm(int n, int m, const std::vector<float>& s, Shape sh) {
  Mask keep(s.size(), 0);
  for (int64_t r = 0; r < sh.rows; ++r)
    for (int64_t g = 0; g < sh.cols; g += m) {
      std::vector<float> group(s.begin() + r * sh.cols + g,
                               s.begin() + r * sh.cols + std::min<int64_t>(sh.cols, g + m));
      const auto order = best_first(group);
      for (size_t i = 0; i < order.size() && i < size_t(n); ++i)
        keep[r * sh.cols + g + order[i]] = 1;
    }
  return keep;
}

Mask ref_vnm(int v, int m, const std::vector<float>& s, Shape sh) {
  Mask keep(s.size(), 0);
  for (int64_t r0 = 0; r0 < sh.rows; r0 += v)
    for (int64_t c0 = 0; c0 < sh.cols; c0 += m) {
      const int64_t r1 = std::min<int64_t>(sh.rows, r0 + v), w = std::min<int64_t>(m, sh.cols - c0);
      std::vector<double> norm(w, 0.0);
      for (int64_t c = 0; c < w; ++c)
        for (int64_t r = r0; r < r1; ++r)
          norm[c] += double(s[r * sh.cols + c0 + c]) * s[r * sh.cols + c0 + c];
      auto columns = best_first(norm);
      columns.resize(std::min<int64_t>(4, w));
      std::sort(columns.begin(), columns.end());
      for (int64_t r = r0; r < r1; ++r) {
        std::vector<float> row;
        for (auto c : columns) row.push_back(s[r * sh.cols + c0 + c]);
        const auto order = best_first(row);
        for (size_t i = 0; i < order.size() && i < 2; ++i)
          keep[r * sh.cols + c0 + columns[order[i]]] = 1;
      }
    }
  return keep;
}

// ---- N:M ----------------------------------------------------------------------------------------

TEST(MaskNM, MatchesBruteForceAndValidates) {
  const std::vector<std::pair<int, int>> nms{{1, 2}, {2, 4},  {1, 4},  {3, 4},   {2, 8},  {4, 8},
                                             {5, 7}, {8, 16}, {1, 32}, {16, 32}, {31, 32}};
  uint64_t seed = 100;
  for (auto [n, m] : nms)
    for (const auto& sh : shapes())
      for (bool tied : {false, true}) {
        const auto s = scores_for(sh, ++seed, tied);
        const Pattern p{.kind = PatternKind::NM, .n = n, .m = m};
        const Mask mask = make_mask(p, s, sh.rows, sh.cols);
        const std::string where =
            fmt::format("{} on {}x{} tied={}", p.to_string(), sh.rows, sh.cols, tied);
        ASSERT_EQ(mask, ref_nm(n, m, s, sh)) << where;
        // Exact count: full groups keep N, a ragged last group of width w keeps min(N, w).
        const int64_t full = sh.cols / m, rest = sh.cols % m;
        EXPECT_EQ(kept(mask), sh.rows * (full * n + std::min<int64_t>(n, rest))) << where;
        const auto v = validate(p, masked(s, mask), sh.rows, sh.cols);
        EXPECT_TRUE(v.ok) << where << ": " << v.violation;
      }
}

// ---- V:N:M --------------------------------------------------------------------------------------

TEST(MaskVNM, MatchesBruteForceColumnNormsAndValidates) {
  uint64_t seed = 200;
  for (int v : {16, 32, 64, 128})
    for (int m : {4, 5, 6, 8, 10, 16, 33})
      for (const auto& sh : shapes())
        for (bool tied : {false, true}) {
          const auto s = scores_for(sh, ++seed, tied);
          const Pattern p{.kind = PatternKind::VNM, .n = 2, .m = m, .v = v};
          const Mask mask = make_mask(p, s, sh.rows, sh.cols);
          const std::string where =
              fmt::format("{} on {}x{} tied={}", p.to_string(), sh.rows, sh.cols, tied);
          ASSERT_EQ(mask, ref_vnm(v, m, s, sh)) << where;
          // Each row keeps 2 per full block; a ragged block of width w keeps min(2, w).
          const int64_t full = sh.cols / m, rest = sh.cols % m;
          EXPECT_EQ(kept(mask), sh.rows * (full * 2 + std::min<int64_t>(2, rest))) << where;
          const auto check = validate(p, masked(s, mask), sh.rows, sh.cols);
          EXPECT_TRUE(check.ok) << where << ": " << check.violation;
          // And V:N:M implies 2:M.
          if (m <= 32)
            EXPECT_TRUE(validate({.kind = PatternKind::NM, .n = 2, .m = m}, masked(s, mask),
                                 sh.rows, sh.cols)
                            .ok);
        }
}

// The chosen columns really are the ones with the largest block norms: every column with a kept
// entry has at least the norm of every column with none, in each V x M block.
TEST(MaskVNM, KeptColumnsHaveTheLargestNorms) {
  const Shape sh{96, 40};
  const auto s = scores_for(sh, 5, false);
  const int v = 32, m = 8;
  const Mask mask =
      make_mask({.kind = PatternKind::VNM, .n = 2, .m = m, .v = v}, s, sh.rows, sh.cols);
  for (int64_t r0 = 0; r0 < sh.rows; r0 += v)
    for (int64_t c0 = 0; c0 < sh.cols; c0 += m) {
      double min_used = INFINITY, max_unused = -1;
      int used_columns = 0;
      for (int64_t c = c0; c < c0 + m; ++c) {
        double norm = 0;
        bool used = false;
        for (int64_t r = r0; r < r0 + v; ++r) {
          norm += double(s[r * sh.cols + c]) * s[r * sh.cols + c];
          used |= mask[r * sh.cols + c] != 0;
        }
        used_columns += used;
        if (used)
          min_used = std::min(min_used, norm);
        else
          max_unused = std::max(max_unused, norm);
      }
      EXPECT_LE(used_columns, 4);
      EXPECT_GE(used_columns, 2);
      EXPECT_GT(min_used, max_unused) << "block rows " << r0 << ", columns " << c0;
    }
}

// ---- unstructured, local and global
// --------------------------------------------------------------

TEST(MaskUnstructured, ExactCountLowestPrunedTiesTowardsHigherIndex) {
  uint64_t seed = 300;
  for (double sparsity : {0.0, 0.1, 0.5, 0.7, 0.95, 0.999})
    for (const auto& sh : shapes())
      for (bool tied : {false, true}) {
        const auto s = scores_for(sh, ++seed, tied);
        const Pattern p{.kind = PatternKind::Unstructured, .sparsity = sparsity};
        const Mask mask = make_mask(p, s, sh.rows, sh.cols);
        const int64_t n = sh.rows * sh.cols;
        const std::string where =
            fmt::format("{} on {}x{} tied={}", p.to_string(), sh.rows, sh.cols, tied);
        EXPECT_EQ(n - kept(mask), ref_count(sparsity, n)) << where;
        ASSERT_EQ(mask, ref_keep_best(s, ref_count(sparsity, n))) << where;
        EXPECT_TRUE(validate(p, masked(s, mask), sh.rows, sh.cols).ok) << where;
      }
}

TEST(MaskUnstructured, RoundingIsNearest) {
  // 10 entries: 0.25 -> 2.5 -> 3 pruned (halves away from zero), 0.24 -> 2, 0.26 -> 3.
  const auto s = magnitudes(test::random_values(10, 1));
  for (auto [sparsity, pruned] :
       std::vector<std::pair<double, int>>{{0.25, 3}, {0.24, 2}, {0.26, 3}, {0.04, 0}, {0.05, 1}})
    EXPECT_EQ(
        10 - kept(make_mask({.kind = PatternKind::Unstructured, .sparsity = sparsity}, s, 2, 5)),
        pruned)
        << sparsity;
}

TEST(MaskUnstructured, GlobalPrunesAcrossTensorsLocalPerTensor) {
  // Tensor a is large-valued, b small-valued: one global threshold prunes b first.
  auto a = magnitudes(test::random_values(300, 1));
  auto b = magnitudes(test::random_values(200, 2));
  for (auto& x : b) x *= 0.01f;
  const double sparsity = 0.5;
  const auto global = make_global_masks(sparsity, {a, b});
  ASSERT_EQ(global.size(), 2u);
  EXPECT_EQ((300 - kept(global[0])) + (200 - kept(global[1])), ref_count(sparsity, 500));
  EXPECT_EQ(kept(global[1]), 0);  // all 200 small ones go, then 50 of a
  EXPECT_EQ(300 - kept(global[0]), 50);
  // Local: half of each.
  const Pattern local{.kind = PatternKind::Unstructured, .sparsity = sparsity};
  EXPECT_EQ(300 - kept(make_mask(local, a, 10, 30)), 150);
  EXPECT_EQ(200 - kept(make_mask(local, b, 10, 20)), 100);
  // Global order: every pruned score <= every kept score across both tensors.
  float max_pruned = 0, min_kept = INFINITY;
  for (int t = 0; t < 2; ++t) {
    const auto& s = t == 0 ? a : b;
    for (size_t i = 0; i < s.size(); ++i) {
      if (global[t][i])
        min_kept = std::min(min_kept, s[i]);
      else
        max_pruned = std::max(max_pruned, s[i]);
    }
  }
  EXPECT_LE(max_pruned, min_kept);
  // make_mask refuses a global pattern.
  EXPECT_THROW(
      make_mask({.kind = PatternKind::Unstructured, .sparsity = 0.5, .global = true}, a, 10, 30),
      Error);
}

// The global radix select and the local nth_element agree exactly, ties and signs included,
// and the global ties run across tensors in order (the later tensor's entries go first).
TEST(MaskUnstructured, GlobalMatchesBruteForceAcrossTensors) {
  uint64_t seed = 400;
  for (double sparsity : {0.0, 0.3, 0.5, 0.77, 0.99})
    for (bool tied : {false, true}) {
      std::vector<std::vector<float>> scores;
      for (int64_t n : {1, 37, 0, 500, 64}) {
        auto v = tied ? tied_values(n, ++seed) : test::random_values(n, ++seed);
        if (!v.empty()) v[0] = -0.0f;  // -0 and +0 tie
        if (v.size() > 1) v[1] = 0.0f;
        scores.push_back(v);  // signed scores: the criterion may produce any order
      }
      std::vector<std::span<const float>> spans(scores.begin(), scores.end());
      const auto masks = make_global_masks(sparsity, spans);
      std::vector<float> all;
      for (const auto& v : scores) all.insert(all.end(), v.begin(), v.end());
      for (auto& x : all) x += 0.0f;
      const Mask expected = ref_keep_best(all, ref_count(sparsity, int64_t(all.size())));
      Mask got;
      for (const auto& m : masks) got.insert(got.end(), m.begin(), m.end());
      EXPECT_EQ(got, expected) << sparsity << " tied=" << tied;
      // One tensor: global == local.
      EXPECT_EQ(
          make_global_masks(sparsity, {spans[3]})[0],
          make_mask({.kind = PatternKind::Unstructured, .sparsity = sparsity}, spans[3], 20, 25));
    }
}

TEST(MaskUnstructured, LargeMatrixIsExactAndFast) {
  // A 4096 x 14336 (MLP-sized) matrix; nth_element, not a sort.
  const int64_t rows = 4096, cols = 14336;
  std::vector<float> s(size_t(rows * cols));
  std::mt19937 rng(3);
  for (auto& x : s) x = float(rng() >> 8);  // many exact ties at this size
  const auto start = std::chrono::steady_clock::now();
  const Mask mask = make_mask({.kind = PatternKind::Unstructured, .sparsity = 0.7}, s, rows, cols);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(rows * cols - kept(mask), ref_count(0.7, rows * cols));
  EXPECT_LT(seconds, 10.0);
  std::printf("unstructured:0.7 mask of %lldx%lld: %.3f s\n", (long long)rows, (long long)cols,
              seconds);
}

// ---- block, rows, cols
// ---------------------------------------------------------------------------

TEST(MaskBlock, MatchesBruteForceAndValidates) {
  uint64_t seed = 500;
  for (auto [bh, bw] :
       std::vector<std::pair<int, int>>{{1, 1}, {4, 4}, {2, 8}, {16, 1}, {3, 5}, {64, 64}})
    for (double sparsity : {0.0, 0.25, 0.5, 0.9})
      for (const auto& sh : shapes())
        for (bool tied : {false, true}) {
          const auto s = scores_for(sh, ++seed, tied);
          const Pattern p{
              .kind = PatternKind::Block, .sparsity = sparsity, .block_rows = bh, .block_cols = bw};
          const Mask mask = make_mask(p, s, sh.rows, sh.cols);
          const int64_t gr = (sh.rows + bh - 1) / bh, gc = (sh.cols + bw - 1) / bw;
          std::vector<double> norm(gr * gc, 0.0);
          for (int64_t r = 0; r < sh.rows; ++r)
            for (int64_t c = 0; c < sh.cols; ++c)
              norm[(r / bh) * gc + c / bw] += double(s[r * sh.cols + c]) * s[r * sh.cols + c];
          const Mask block_keep = ref_keep_best(norm, ref_count(sparsity, gr * gc));
          Mask expected(s.size());
          for (int64_t r = 0; r < sh.rows; ++r)
            for (int64_t c = 0; c < sh.cols; ++c)
              expected[r * sh.cols + c] = block_keep[(r / bh) * gc + c / bw];
          const std::string where =
              fmt::format("{} on {}x{} tied={}", p.to_string(), sh.rows, sh.cols, tied);
          ASSERT_EQ(mask, expected) << where;
          EXPECT_TRUE(validate(p, masked(s, mask), sh.rows, sh.cols).ok) << where;
        }
}

TEST(MaskStructured, RowsAndColumnsMatchBruteForce) {
  uint64_t seed = 600;
  for (double sparsity : {0.0, 0.25, 0.5, 0.9})
    for (const auto& sh : shapes())
      for (bool tied : {false, true}) {
        const auto s = scores_for(sh, ++seed, tied);
        std::vector<double> row_norm(sh.rows, 0.0), col_norm(sh.cols, 0.0);
        for (int64_t r = 0; r < sh.rows; ++r)
          for (int64_t c = 0; c < sh.cols; ++c) {
            row_norm[r] += double(s[r * sh.cols + c]) * s[r * sh.cols + c];
            col_norm[c] += double(s[r * sh.cols + c]) * s[r * sh.cols + c];
          }
        const Mask keep_rows = ref_keep_best(row_norm, ref_count(sparsity, sh.rows));
        const Mask keep_cols = ref_keep_best(col_norm, ref_count(sparsity, sh.cols));
        const Pattern rows{.kind = PatternKind::Rows, .sparsity = sparsity};
        const Pattern cols{.kind = PatternKind::Columns, .sparsity = sparsity};
        const Mask row_mask = make_mask(rows, s, sh.rows, sh.cols);
        const Mask col_mask = make_mask(cols, s, sh.rows, sh.cols);
        for (int64_t r = 0; r < sh.rows; ++r)
          for (int64_t c = 0; c < sh.cols; ++c) {
            ASSERT_EQ(row_mask[r * sh.cols + c], keep_rows[r]) << sh.rows << "x" << sh.cols;
            ASSERT_EQ(col_mask[r * sh.cols + c], keep_cols[c]) << sh.rows << "x" << sh.cols;
          }
        EXPECT_TRUE(validate(rows, masked(s, row_mask), sh.rows, sh.cols).ok);
        EXPECT_TRUE(validate(cols, masked(s, col_mask), sh.rows, sh.cols).ok);
      }
}

TEST(MaskDense, AllOnes) {
  const auto s = scores_for({9, 13}, 1, false);
  EXPECT_EQ(kept(make_mask(Pattern{}, s, 9, 13)), 9 * 13);
}

TEST(MaskTies, DeterministicAndLowerIndexKept) {
  // Repeated magnitudes: two runs agree, and within an N:M group equal scores keep the lower
  // column. Row [0.2, 0.5, 0.2, 0.2] under 2:4 keeps columns 0 and 1.
  const std::vector<float> s{0.2f, 0.5f, 0.2f, 0.2f, 0.3f, 0.3f, 0.3f, 0.1f};
  EXPECT_EQ(make_mask(Pattern::parse("2:4"), s, 2, 4), (Mask{1, 1, 0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(make_mask(Pattern::parse("unstructured:0.5"), s, 2, 4), (Mask{0, 1, 0, 0, 1, 1, 1, 0}));
  const auto t = magnitudes(tied_values(70 * 45, 9));
  for (const char* text :
       {"2:4", "64:2:8", "16:2:5", "unstructured:0.6", "block:4x4:0.5", "rows:0.3", "cols:0.3"})
    EXPECT_EQ(make_mask(Pattern::parse(text), t, 70, 45),
              make_mask(Pattern::parse(text), t, 70, 45))
        << text;
}

TEST(MaskErrors, BadScores) {
  std::vector<float> s = magnitudes(test::random_values(12, 3));
  EXPECT_THROW(make_mask(Pattern::parse("2:4"), s, 3, 5), Error);
  s[7] = NAN;
  try {
    make_mask(Pattern::parse("2:4"), s, 3, 4);
    ADD_FAILURE() << "NaN score accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 1, column 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'2:4'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_global_masks(1.0, {}), Error);
  // Hand-built patterns get the parser's checks.
  EXPECT_THROW(make_mask({.kind = PatternKind::NM, .n = 2, .m = 0}, s, 3, 4), Error);
  EXPECT_THROW(validate({.kind = PatternKind::VNM, .n = 2, .m = 8, .v = 48}, s, 3, 4), Error);
  EXPECT_THROW(make_mask({.kind = PatternKind::NM, .n = 2, .m = 4, .v = 64}, s, 3, 4), Error);
}

// ---- validate
// -------------------------------------------------------------------------------------

std::string violation(const Pattern& p, const std::vector<float>& w, int64_t rows, int64_t cols) {
  const auto v = validate(p, w, rows, cols);
  EXPECT_FALSE(v.ok) << p.to_string();
  return v.violation;
}

TEST(Validate, NamesTheFirstViolatingNMGroup) {
  const int64_t rows = 8, cols = 18;
  const auto w = test::random_values(rows * cols, 21);
  const Pattern p = Pattern::parse("2:4");
  auto pruned = masked(w, make_mask(p, magnitudes(w), rows, cols));
  ASSERT_TRUE(validate(p, pruned, rows, cols).ok);
  // Damage row 5 first, then row 3 later in the row: the earlier row is reported.
  for (int64_t c = 12; c < 16; ++c) pruned[5 * cols + c] = 1.0f;
  for (int64_t c = 8; c < 12; ++c)
    if (pruned[3 * cols + c] == 0.0f) {
      pruned[3 * cols + c] = 0.5f;
      break;
    }
  EXPECT_EQ(violation(p, pruned, rows, cols),
            "row 3, columns 8..11: 3 nonzeros where 2:4 allows 2");
  // The ragged last group (columns 16..17) is checked too, under 1:4.
  auto ragged = masked(w, make_mask(Pattern::parse("1:4"), magnitudes(w), rows, cols));
  ragged[2 * cols + 16] = ragged[2 * cols + 17] = 1.0f;
  EXPECT_EQ(violation(Pattern::parse("1:4"), ragged, rows, cols),
            "row 2, columns 16..17: 2 nonzeros where 1:4 allows 1");
}

TEST(Validate, NamesTheViolatingVNMBlock) {
  const int64_t rows = 70, cols = 20;
  const auto w = test::random_values(rows * cols, 22);
  const Pattern p = Pattern::parse("64:2:8");
  const auto mask = make_mask(p, magnitudes(w), rows, cols);
  const auto pruned = masked(w, mask);
  ASSERT_TRUE(validate(p, pruned, rows, cols).ok);
  // Rows 64..69, columns 8..15 rewritten by hand: 2 nonzeros per row in 5 distinct columns.
  auto columns = pruned;
  for (int64_t r = 64; r < 70; ++r)
    for (int64_t c = 8; c < 16; ++c) columns[r * cols + c] = 0.0f;
  for (auto [r, c] : std::vector<std::pair<int64_t, int64_t>>{
           {64, 8}, {64, 9}, {65, 10}, {65, 11}, {66, 12}, {66, 8}})
    columns[r * cols + c] = 0.25f;
  EXPECT_EQ(violation(p, columns, rows, cols),
            "rows 64..69, columns 8..15: 5 columns hold nonzeros where 64:2:8 allows 4");
  // Rows 0..63, columns 0..7 rewritten: columns 1 and 3 in every row, row 10 also column 5.
  auto row = pruned;
  for (int64_t r = 0; r < 64; ++r)
    for (int64_t c = 0; c < 8; ++c)
      row[r * cols + c] = (c == 1 || c == 3 || (r == 10 && c == 5)) ? 0.5f : 0.0f;
  EXPECT_EQ(violation(p, row, rows, cols),
            "row 10, columns 0..7: 3 nonzeros where 64:2:8 allows 2 per row");
}

TEST(Validate, FractionsForUnstructuredBlockRowsCols) {
  auto w = test::random_values(100, 23);
  for (int i = 0; i < 41; ++i) w[i * 2] = 0.0f;  // 41 zeros of 100
  EXPECT_EQ(violation(Pattern::parse("unstructured:0.5"), w, 10, 10),
            "zero fraction 0.41 < 0.5 (41 of 100 entries are zero; unstructured:0.5 needs 50)");
  EXPECT_TRUE(validate(Pattern::parse("unstructured:0.41"), w, 10, 10).ok);
  EXPECT_TRUE(validate(Pattern::parse("unstructured:0.5:global"), w, 10, 10).ok);

  auto b = test::random_values(8 * 8, 24);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) b[r * 8 + c] = 0.0f;  // 1 of 4 blocks zero
  EXPECT_TRUE(validate(Pattern::parse("block:4x4:0.25"), b, 8, 8).ok);
  EXPECT_EQ(violation(Pattern::parse("block:4x4:0.5"), b, 8, 8),
            "zero-block fraction 0.25 < 0.5 (1 of 4 4x4 blocks are zero; block:4x4:0.5 needs 2)");
  EXPECT_EQ(violation(Pattern::parse("rows:0.25"), b, 8, 8),
            "zero-row fraction 0 < 0.25 (0 of 8 rows are zero; rows:0.25 needs 2)");
  EXPECT_FALSE(validate(Pattern::parse("cols:0.2"), b, 8, 8).ok);
  EXPECT_TRUE(validate(Pattern::parse("dense"), b, 8, 8).ok);
  EXPECT_THROW(validate(Pattern::parse("2:4"), b, 8, 9), Error);
}

// ---- satisfied_patterns
// ---------------------------------------------------------------------------

std::vector<Pattern> brute_force_satisfied(const std::vector<float>& w, int64_t rows,
                                           int64_t cols) {
  std::vector<Pattern> out;
  for (int m : {4, 8, 16, 32})
    for (int n = 1; n < m; ++n)
      if (validate({.kind = PatternKind::NM, .n = n, .m = m}, w, rows, cols).ok) {
        out.push_back({.kind = PatternKind::NM, .n = n, .m = m});
        break;
      }
  for (int m : {4, 5, 6, 8, 10, 16})
    for (int v : {128, 64, 32, 16})
      if (validate({.kind = PatternKind::VNM, .n = 2, .m = m, .v = v}, w, rows, cols).ok) {
        out.push_back({.kind = PatternKind::VNM, .n = 2, .m = m, .v = v});
        break;
      }
  return out;
}

TEST(SatisfiedPatterns, MatchesBruteForceAndIsStrongestFirst) {
  uint64_t seed = 700;
  const std::vector<Shape> cases{{1, 1},    {3, 5},    {16, 16}, {70, 45},
                                 {130, 33}, {256, 64}, {300, 20}};
  for (const char* text : {"dense", "2:4", "1:4", "4:8", "3:16", "16:2:8", "64:2:5", "128:2:16",
                           "32:2:10", "unstructured:0.9", "rows:0.5"})
    for (const auto& sh : cases) {
      const auto w = test::random_values(sh.rows * sh.cols, ++seed);
      const auto pruned =
          masked(w, make_mask(Pattern::parse(text), magnitudes(w), sh.rows, sh.cols));
      const auto found = satisfied_patterns(pruned, sh.rows, sh.cols);
      auto expected = brute_force_satisfied(pruned, sh.rows, sh.cols);
      const std::string where = fmt::format("{} on {}x{}", text, sh.rows, sh.cols);
      ASSERT_EQ(found.size(), expected.size()) << where;
      for (const auto& p : expected)
        EXPECT_NE(std::find(found.begin(), found.end(), p), found.end())
            << where << ": " << p.to_string();
      for (size_t i = 1; i < found.size(); ++i)
        EXPECT_LE(found[i - 1].density(), found[i].density()) << where;
      // The pattern pruned to is found (or one at least as strong of the same kind).
      const Pattern p = Pattern::parse(text);
      if (p.kind == PatternKind::NM || p.kind == PatternKind::VNM)
        EXPECT_TRUE(std::any_of(found.begin(), found.end(), [&](const Pattern& f) {
          return f.kind == p.kind && f.m == p.m && f.density() <= p.density() && f.v >= p.v;
        })) << where;
    }
  // A dense random matrix satisfies none.
  const auto dense = test::random_values(64 * 64, 1);
  EXPECT_TRUE(satisfied_patterns(dense, 64, 64).empty());
}

// ---- apply_mask and prune -----------------------------------------------------------------------

std::vector<uint16_t> bits16(const Tensor& t) {
  std::vector<uint16_t> out(t.numel());
  std::memcpy(out.data(), t.bytes().data(), t.nbytes());
  return out;
}

TEST(ApplyMask, ExactZerosKeptBitsUntouched) {
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    const Tensor original = test::random_tensor("w", dtype, {6, 10}, 31);
    Tensor t = Tensor::from_f32("w", dtype, {6, 10}, original.to_f32());
    Mask mask(60);
    std::mt19937 rng(5);
    for (auto& m : mask) m = rng() % 2;
    apply_mask(t, mask);
    const size_t width = dtype_size(dtype);
    for (size_t i = 0; i < mask.size(); ++i) {
      const std::byte* got = t.bytes().data() + i * width;
      const std::byte* was = original.bytes().data() + i * width;
      if (mask[i])
        EXPECT_EQ(std::memcmp(got, was, width), 0) << dtype_name(dtype) << " entry " << i;
      else
        EXPECT_TRUE(std::all_of(got, got + width, [](std::byte b) { return b == std::byte{0}; }));
    }
  }
  Tensor ints("ids", DType::I32, {4});
  EXPECT_THROW(apply_mask(ints, Mask(4, 0)), Error);
  Tensor f("w", DType::F32, {4});
  EXPECT_THROW(apply_mask(f, Mask(3, 0)), Error);
}

// f16 and bf16 values survive a round trip through f32 bit-exactly (so criteria may work in f32).
TEST(ApplyMask, HalfRoundTripThroughF32IsExact) {
  for (DType dtype : {DType::F16, DType::BF16}) {
    const Tensor t = test::random_tensor("w", dtype, {1000}, 32);
    Tensor copy("w", dtype, {1000});
    copy.assign_f32(t.to_f32());
    EXPECT_EQ(bits16(copy), bits16(t)) << dtype_name(dtype);
  }
}

TEST(Prune, EveryPatternEveryDtype) {
  const auto criterion = make_criterion("magnitude");
  EXPECT_EQ(criterion->name(), "magnitude");
  for (DType dtype : {DType::F32, DType::F16, DType::BF16})
    for (const char* text : {"dense", "unstructured:0.6", "2:4", "1:4", "16:2:8", "64:2:5",
                             "block:2x4:0.5", "rows:0.25", "cols:0.25"}) {
      const Pattern p = Pattern::parse(text);
      const Tensor w = test::random_tensor("layer.weight", dtype, {2, 35, 22}, 41);  // 70 x 22
      const Tensor out = prune(w, p, *criterion);
      EXPECT_EQ(out.shape(), w.shape());
      EXPECT_EQ(out.dtype(), dtype);
      const auto before = w.to_f32(), after = out.to_f32();
      const auto check = validate(p, after, 70, 22);
      EXPECT_TRUE(check.ok) << text << " " << dtype_name(dtype) << ": " << check.violation;
      // Kept values are the originals; the mask is the one make_mask gives for |w|.
      const Mask mask = make_mask(p, magnitudes(before), 70, 22);
      for (size_t i = 0; i < before.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(after[i]),
                  mask[i] ? std::bit_cast<uint32_t>(before[i]) : 0u)
            << text << " entry " << i;
      // The input is not modified.
      EXPECT_EQ(w.to_f32(), before);
    }
}

TEST(Prune, ErrorsNameTheTensor) {
  const auto criterion = make_criterion("magnitude");
  const Tensor w = test::random_tensor("blk.0.w", DType::F32, {4, 8}, 1);
  try {
    prune(w, Pattern::parse("unstructured:0.5:global"), *criterion);
    ADD_FAILURE() << "global pattern accepted by prune";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.w"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("make_global_masks"), std::string::npos) << e.what();
  }
  auto values = w.to_f32();
  values[9] = NAN;
  try {
    prune(Tensor::from_f32("blk.1.w", DType::F32, {4, 8}, values), Pattern::parse("2:4"),
          *criterion);
    ADD_FAILURE() << "NaN weight accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.1.w"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 1, column 1"), std::string::npos) << e.what();
  }
  try {
    make_criterion("wanda2");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'wanda2'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sparsa
