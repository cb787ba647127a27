// Channel permutation search for N:M and V:N:M masks (see include/sparsa/channel_permutation.h).
//
// The objective is the kept score of the mask builders' own rules (mask_nm.cc, mask_vnm.cc):
// N:M keeps the top N of each row's M; V:N:M picks per V x M block the 4 columns of largest L2
// norm over the block's rows, then the top 2 of those per row. A group's kept score depends only
// on the set of columns in it, so a swap of two columns between groups a and b changes exactly
// those two groups' terms and is scored exactly by re-evaluating them. Ties inside the search
// are broken by position (as the builders do); the final answer is re-checked with make_mask.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "sparsa/channel_permutation.h"
#include "sparsa/error.h"
#include "sparsa/prune.h"

namespace sparsa {
namespace {

// One score matrix, transposed (column-major) so a group's columns are contiguous per column.
struct Matrix {
  int64_t rows = 0;
  std::vector<float> t;         // [cols][rows]
  std::vector<float> o;         // the objective, [cols][rows]; empty: the scores (t)
  std::vector<double> norm2;    // V:N:M: [row blocks][cols], sum of squares over the block
};

class Search {
 public:
  Search(const Pattern& p, const std::vector<ScoreMatrix>& scores, int64_t cols)
      : vnm_(p.kind == PatternKind::VNM), n_(p.n), m_(p.m), v_(vnm_ ? p.v : 1), cols_(cols) {
    for (const ScoreMatrix& s : scores) {
      Matrix mat;
      mat.rows = s.rows;
      mat.t.resize(size_t(s.rows * cols));
      for (int64_t r = 0; r < s.rows; ++r)
        for (int64_t c = 0; c < cols; ++c) mat.t[c * s.rows + r] = s.scores[r * cols + c];
      if (!s.objective.empty()) {
        mat.o.resize(mat.t.size());
        for (int64_t r = 0; r < s.rows; ++r)
          for (int64_t c = 0; c < cols; ++c) mat.o[c * s.rows + r] = s.objective[r * cols + c];
      }
      if (vnm_) {
        const int64_t blocks = (s.rows + v_ - 1) / v_;
        mat.norm2.assign(size_t(blocks * cols), 0.0);
        for (int64_t c = 0; c < cols; ++c)
          for (int64_t r = 0; r < s.rows; ++r) {
            const double x = mat.t[c * s.rows + r];
            mat.norm2[(r / v_) * cols + c] += x * x;
          }
      }
      mats_.push_back(std::move(mat));
    }
  }

  int64_t groups() const { return (cols_ + m_ - 1) / m_; }
  int64_t group_begin(int64_t g) const { return g * m_; }
  int64_t group_width(int64_t g) const { return std::min<int64_t>(m_, cols_ - g * m_); }

  // Kept score of a group holding original columns c[0..w) in this order.
  double group_score(const int32_t* c, int w) const {
    double total = 0;
    for (const Matrix& mat : mats_) total += vnm_ ? vnm_score(mat, c, w) : nm_score(mat, c, w);
    return total;
  }

 private:
  double nm_score(const Matrix& mat, const int32_t* c, int w) const {
    const int keep = std::min(n_, w);
    double total = 0;
    float vals[64];  // N:M groups have M <= 32 (pattern.cc)
    if (!mat.o.empty()) {  // keep by score (ties: earlier position, as mask_nm.cc), sum objective
      for (int64_t r = 0; r < mat.rows; ++r) {
        for (int k = 0; k < w; ++k) vals[k] = mat.t[c[k] * mat.rows + r];
        for (int i = 0; i < w; ++i) {
          int better = 0;
          for (int j = 0; j < w; ++j) better += vals[j] > vals[i] || (vals[j] == vals[i] && j < i);
          if (better < keep) total += mat.o[c[i] * mat.rows + r];
        }
      }
      return total;
    }
    for (int64_t r = 0; r < mat.rows; ++r) {
      for (int k = 0; k < w; ++k) vals[k] = mat.t[c[k] * mat.rows + r];
      std::partial_sort(vals, vals + keep, vals + w, std::greater<float>());
      for (int k = 0; k < keep; ++k) total += vals[k];
    }
    return total;
  }

  double vnm_score(const Matrix& mat, const int32_t* c, int w) const {
    const int choose = std::min(4, w), keep = std::min(2, choose);
    double total = 0;
    const int64_t blocks = (mat.rows + v_ - 1) / v_;
    for (int64_t b = 0; b < blocks; ++b) {
      const double* n2 = mat.norm2.data() + b * cols_;
      int chosen[4];
      int count = 0;
      for (int i = 0; i < w; ++i) {  // rank = how many beat column i (ties: lower position)
        int better = 0;
        for (int j = 0; j < w; ++j)
          better += n2[c[j]] > n2[c[i]] || (n2[c[j]] == n2[c[i]] && j < i);
        if (better < choose) chosen[count++] = c[i];
      }
      const int64_t r0 = b * v_, r1 = std::min<int64_t>(mat.rows, r0 + v_);
      const float* col[4];
      for (int k = 0; k < count; ++k) col[k] = mat.t.data() + chosen[k] * mat.rows;
      if (!mat.o.empty()) {  // top 2 by score per row (ties: earlier column), sum objective
        const float* obj[4];
        for (int k = 0; k < count; ++k) obj[k] = mat.o.data() + chosen[k] * mat.rows;
        for (int64_t r = r0; r < r1; ++r) {
          if (keep == count) {
            for (int k = 0; k < count; ++k) total += obj[k][r];
            continue;
          }
          float a = -INFINITY, s = -INFINITY;
          int ka = 0, ks = 0;
          for (int k = 0; k < count; ++k) {
            const float x = col[k][r];
            if (x > a) {
              s = a, ks = ka;
              a = x, ka = k;
            } else if (x > s) {
              s = x, ks = k;
            }
          }
          total += double(obj[ka][r]) + double(obj[ks][r]);
        }
        continue;
      }
      for (int64_t r = r0; r < r1; ++r) {
        if (keep == count) {
          for (int k = 0; k < count; ++k) total += col[k][r];
          continue;
        }
        // Top 2 of `count` (3 or 4) values.
        float a = -INFINITY, s = -INFINITY;
        for (int k = 0; k < count; ++k) {
          const float x = col[k][r];
          if (x > a) {
            s = a;
            a = x;
          } else if (x > s) {
            s = x;
          }
        }
        total += double(a) + double(s);
      }
    }
    return total;
  }

  bool vnm_;
  int n_, m_;
  int64_t v_, cols_;
  std::vector<Matrix> mats_;
};

double total_kept(const Pattern& pattern, const std::vector<ScoreMatrix>& scores, int64_t cols,
                  std::span<const int32_t> perm) {
  double total = 0;
  for (const ScoreMatrix& s : scores) {
    const auto permuted = permute_columns(s.scores, s.rows, cols, perm);
    total += s.objective.empty()
                 ? kept_score(pattern, permuted, s.rows, cols)
                 : kept_value(pattern, permuted, permute_columns(s.objective, s.rows, cols, perm),
                              s.rows, cols);
  }
  return total;
}

}  // namespace

double kept_score(const Pattern& pattern, std::span<const float> scores, int64_t rows,
                  int64_t cols) {
  const auto keep = make_mask(pattern, scores, rows, cols);
  double total = 0;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) total += scores[i];
  return total;
}

double kept_value(const Pattern& pattern, std::span<const float> scores,
                  std::span<const float> objective, int64_t rows, int64_t cols) {
  if (objective.size() != scores.size())
    fail("kept_value: {} objective values for {} scores ({}x{})", objective.size(), scores.size(),
         rows, cols);
  const auto keep = make_mask(pattern, scores, rows, cols);
  double total = 0;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) total += objective[i];
  return total;
}

std::vector<float> permute_columns(std::span<const float> values, int64_t rows, int64_t cols,
                                   std::span<const int32_t> perm) {
  if (int64_t(values.size()) != rows * cols || int64_t(perm.size()) != cols)
    fail("permute_columns: {} values and a permutation of {} for a {}x{} matrix", values.size(),
         perm.size(), rows, cols);
  std::vector<float> out(values.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = values[r * cols + perm[c]];
  return out;
}

std::vector<float> permute_rows(std::span<const float> values, int64_t rows, int64_t cols,
                                std::span<const int32_t> perm) {
  if (int64_t(values.size()) != rows * cols || int64_t(perm.size()) != rows)
    fail("permute_rows: {} values and a permutation of {} for a {}x{} matrix", values.size(),
         perm.size(), rows, cols);
  std::vector<float> out(values.size());
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(values.data() + perm[r] * cols, cols, out.data() + r * cols);
  return out;
}

std::vector<int32_t> find_channel_permutation(const Pattern& pattern,
                                              const std::vector<ScoreMatrix>& scores, int64_t cols,
                                              const PermutationOptions& options) {
  if (pattern.kind != PatternKind::NM && pattern.kind != PatternKind::VNM)
    fail("channel permutation: pattern '{}' has no groups of M inputs; use N:M or V:N:M",
         pattern.to_string());
  if (cols <= 0) fail("channel permutation: {} columns", cols);
  for (const ScoreMatrix& s : scores) {
    if (s.rows <= 0 || int64_t(s.scores.size()) != s.rows * cols)
      fail("channel permutation: {} scores for a {}x{} matrix", s.scores.size(), s.rows, cols);
    if (!s.objective.empty() && s.objective.size() != s.scores.size())
      fail("channel permutation: {} objective values for a {}x{} matrix", s.objective.size(),
           s.rows, cols);
    for (float x : s.scores)
      if (!std::isfinite(x)) fail("channel permutation: a score is {} (must be finite)", x);
    for (float x : s.objective)
      if (!std::isfinite(x)) fail("channel permutation: an objective value is {} (must be finite)", x);
  }
  std::vector<int32_t> identity(static_cast<size_t>(cols));
  std::iota(identity.begin(), identity.end(), 0);
  if (scores.empty() || cols <= pattern.m) return identity;

  const Search search(pattern, scores, cols);
  const int64_t groups = search.groups();
  std::vector<double> group_score(static_cast<size_t>(groups));
  const auto score_all = [&](const std::vector<int32_t>& perm) {
    double total = 0;
    for (int64_t g = 0; g < groups; ++g)
      total += group_score[g] =
          search.group_score(perm.data() + search.group_begin(g), int(search.group_width(g)));
    return total;
  };

  // Snake deal by column norm: strongest columns one per group, then the next, back and forth.
  std::vector<double> norm(static_cast<size_t>(cols), 0.0);
  // (With an objective: its column sums, the energy each column would lose if pruned.)
  for (const ScoreMatrix& s : scores)
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        norm[c] += s.objective.empty() ? double(s.scores[r * cols + c]) * s.scores[r * cols + c]
                                       : double(s.objective[r * cols + c]);
  std::vector<int32_t> order = identity;
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return norm[a] > norm[b]; });
  std::vector<std::vector<int32_t>> members(static_cast<size_t>(groups));
  for (size_t dealt = 0, round = 0; dealt < order.size(); ++round)
    for (int64_t i = 0; i < groups && dealt < order.size(); ++i) {
      const int64_t g = round % 2 == 0 ? i : groups - 1 - i;
      if (int64_t(members[g].size()) < search.group_width(g)) members[g].push_back(order[dealt++]);
    }
  std::vector<int32_t> dealt;
  for (auto& m : members) {
    std::sort(m.begin(), m.end());
    dealt.insert(dealt.end(), m.begin(), m.end());
  }
  std::vector<int32_t> perm = identity;
  const double identity_score = score_all(identity);
  if (score_all(dealt) > identity_score) perm = dealt;
  score_all(perm);

  // Local search: random pairings of groups; within a pair, best improving swap until none.
  std::mt19937_64 rng(options.seed);
  std::vector<int64_t> shuffled(static_cast<size_t>(groups));
  std::iota(shuffled.begin(), shuffled.end(), 0);
  for (int round = 0, idle = 0; round < options.rounds && idle < 2; ++round) {
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    int64_t improved = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : improved)
    for (int64_t p = 0; p < groups / 2; ++p) {
      const int64_t ga = shuffled[2 * p], gb = shuffled[2 * p + 1];
      int32_t* a = perm.data() + search.group_begin(ga);
      int32_t* b = perm.data() + search.group_begin(gb);
      const int wa = int(search.group_width(ga)), wb = int(search.group_width(gb));
      for (int step = 0; step < options.swaps_per_pair; ++step) {
        const double now = group_score[ga] + group_score[gb];
        double best = now * (1 + 1e-12) + 1e-30, best_a = 0, best_b = 0;
        int bi = -1, bj = -1;
        std::vector<int32_t> buf_a(static_cast<size_t>(wa)), buf_b(static_cast<size_t>(wb));
        int32_t* ca = buf_a.data();
        int32_t* cb = buf_b.data();
        for (int i = 0; i < wa; ++i)
          for (int j = 0; j < wb; ++j) {
            std::copy_n(a, wa, ca);
            std::copy_n(b, wb, cb);
            std::swap(ca[i], cb[j]);
            const double sa = search.group_score(ca, wa), sb = search.group_score(cb, wb);
            if (sa + sb > best) {
              best = sa + sb;
              best_a = sa;
              best_b = sb;
              bi = i;
              bj = j;
            }
          }
        if (bi < 0) break;
        std::swap(a[bi], b[bj]);
        group_score[ga] = best_a;
        group_score[gb] = best_b;
        ++improved;
      }
    }
    idle = improved == 0 ? idle + 1 : 0;
  }

  // The exact check with the mask builder: never worse than the identity.
  if (total_kept(pattern, scores, cols, perm) < total_kept(pattern, scores, cols, identity))
    return identity;
  return perm;
}

}  // namespace sparsa
