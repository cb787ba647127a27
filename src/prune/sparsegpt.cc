// SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
// One-Shot", 2023): prune W column by column; each pruned weight's error is spread over the
// not-yet-processed columns of its row through the inverse Hessian (optimal brain surgeon), in
// lazy blocks so that the bulk update is one matrix product per block.
#include <algorithm>
#include <cmath>
#include <vector>

#include "sparsa/error.h"
#include "sparsa/prune.h"

namespace sparsa {
namespace {

// In-place lower Cholesky factor of the symmetric positive definite a [n, n] (row-major,
// lower triangle written). Returns false when a pivot is not positive.
bool cholesky_lower(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double* aj = a.data() + j * n;
    double d = aj[j];
    for (int64_t k = 0; k < j; ++k) d -= aj[k] * aj[k];
    if (!(d > 0.0)) return false;
    d = std::sqrt(d);
    aj[j] = d;
#pragma omp parallel for schedule(static)
    for (int64_t i = j + 1; i < n; ++i) {
      double* ai = a.data() + i * n;
      double s = ai[j];
#pragma omp simd reduction(- : s)
      for (int64_t k = 0; k < j; ++k) s -= ai[k] * aj[k];
      ai[j] = s / d;
    }
  }
  return true;
}

// Inverse of the lower triangular l [n, n], one column at a time (columns are independent).
std::vector<double> invert_lower(const std::vector<double>& l, int64_t n) {
  std::vector<double> inv(size_t(n * n), 0.0);
#pragma omp parallel
  {
    std::vector<double> x(static_cast<size_t>(n), 0.0);
#pragma omp for schedule(dynamic, 8)
    for (int64_t j = 0; j < n; ++j) {
      x[size_t(j)] = 1.0 / l[size_t(j * n + j)];
      for (int64_t i = j + 1; i < n; ++i) {
        const double* li = l.data() + i * n;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = j; k < i; ++k) s += li[k] * x[size_t(k)];
        x[size_t(i)] = -s / li[i];
      }
      for (int64_t i = j; i < n; ++i) inv[size_t(i * n + j)] = x[size_t(i)];
    }
  }
  return inv;
}

// Column groups the mask is chosen over: M for N:M and V:N:M, the whole block otherwise.
int64_t group_width(const Pattern& p) {
  return p.kind == PatternKind::NM || p.kind == PatternKind::VNM ? p.m : 0;
}

}  // namespace

SparseGptHessian sparsegpt_prepare(std::span<const float> hessian, int64_t cols, double damping) {
  if (cols <= 0 || static_cast<int64_t>(hessian.size()) != cols * cols)
    fail("sparsegpt: Hessian of {} entries for {} input columns (expected {}x{})", hessian.size(),
         cols, cols, cols);
  if (!(damping > 0.0)) fail("sparsegpt: damping {} must be > 0", damping);
  SparseGptHessian out;
  out.cols = cols;
  out.dead.assign(size_t(cols), 0);
  const int64_t n = cols;
  double mean_diag = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = hessian[size_t(j * n + j)];
    if (!std::isfinite(d) || d < 0.0)
      fail("sparsegpt: Hessian diagonal entry {} is {} (must be finite and >= 0)", j, d);
    if (d == 0.0) out.dead[size_t(j)] = 1;
    mean_diag += d;
  }
  mean_diag /= double(n);
  if (mean_diag == 0.0) mean_diag = 1.0;
  // H^-1 = U^T U with U upper: factor the reversed matrix P H P = L L^T (P reverses the index
  // order); then H = R R^T with R = P L P upper, and U = R^-1 = P L^-1 P.
  for (double damp = damping;; damp *= 10.0) {
    std::vector<double> a(size_t(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double v = out.dead[size_t(i)] || out.dead[size_t(j)] ? (i == j ? 1.0 : 0.0)
                                                             : double(hessian[size_t(i * n + j)]);
        if (i == j) v += damp * mean_diag;
        a[size_t((n - 1 - i) * n + (n - 1 - j))] = v;
      }
    if (!cholesky_lower(a, n)) {
      if (damp > 1e3) fail("sparsegpt: Hessian [{}x{}] is not positive definite", n, n);
      continue;  // more damping, as the reference implementation's users do
    }
    const std::vector<double> inv = invert_lower(a, n);
    out.hinv_upper.assign(size_t(n * n), 0.0f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i; j < n; ++j)
        out.hinv_upper[size_t(i * n + j)] = float(inv[size_t((n - 1 - i) * n + (n - 1 - j))]);
    return out;
  }
}

Tensor sparsegpt_prune(const Tensor& weights, const Pattern& pattern, const SparseGptHessian& h,
                       int64_t block_size) {
  const std::string what = fmt::format("sparsegpt: tensor '{}' {} pattern '{}'", weights.name(),
                                       shape_string(weights.shape()), pattern.to_string());
  const bool unstructured = pattern.kind == PatternKind::Unstructured;
  if (unstructured && pattern.global)
    fail("{}: a global pattern is not supported (SparseGPT prunes each layer on its own)", what);
  if (!unstructured && pattern.kind != PatternKind::NM && pattern.kind != PatternKind::VNM &&
      pattern.kind != PatternKind::Dense)
    fail("{}: SparseGPT supports unstructured, N:M and V:N:M patterns", what);
  if (weights.shape().size() != 2) fail("{}: expected a matrix", what);
  const int64_t rows = weights.rows(), cols = weights.cols();
  if (cols != h.cols) fail("{}: {} input columns but the Hessian has {}", what, cols, h.cols);
  if (block_size < 1) fail("{}: block size {} must be >= 1", what, block_size);

  std::vector<float> w = weights.to_f32();
  for (float v : w)
    if (!std::isfinite(v)) fail("{}: holds a non-finite weight", what);
  Tensor out = Tensor::from_f32(weights.name(), DType::F32, {rows, cols}, w);
  if (pattern.kind == PatternKind::Dense) return out;
  for (int64_t j = 0; j < cols; ++j)
    if (h.dead[size_t(j)])
      for (int64_t r = 0; r < rows; ++r) w[size_t(r * cols + j)] = 0.0f;

  const int64_t gw = group_width(pattern);
  const int64_t bs = gw ? std::max<int64_t>(gw, block_size / gw * gw) : block_size;
  const float* u = h.hinv_upper.data();
  std::vector<float> err(size_t(rows * bs)), scores, keep_block;
  std::vector<uint8_t> keep;
  for (int64_t i1 = 0; i1 < cols; i1 += bs) {
    const int64_t i2 = std::min(cols, i1 + bs), width = i2 - i1;
    // Segments of columns that share one mask decision: the block (unstructured) or a group.
    const int64_t seg = gw ? gw : width;
    for (int64_t s0 = i1; s0 < i2; s0 += seg) {
      const int64_t s1 = std::min(i2, s0 + seg), sw = s1 - s0;
      // Score w^2 / [H^-1]_jj^2 with the weights as updated so far, then the pattern's mask.
      scores.resize(size_t(rows * sw));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < sw; ++c) {
          const float d = u[(s0 + c) * cols + (s0 + c)];
          const float v = w[size_t(r * cols + s0 + c)];
          scores[size_t(r * sw + c)] = v * v / (d * d);
        }
      try {
        keep = make_mask(pattern, scores, rows, sw);
      } catch (const Error& e) {
        fail("{}: {}", what, e.what());
      }
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        float* wr = w.data() + r * cols;
        float* er = err.data() + r * bs;
        for (int64_t i = s0; i < s1; ++i) {
          const float* ui = u + i * cols;
          const float wv = wr[i];
          const float q = keep[size_t(r * sw + (i - s0))] ? wv : 0.0f;
          const float e = (wv - q) / ui[i];
          if (e != 0.0f) {
#pragma omp simd
            for (int64_t c = i + 1; c < i2; ++c) wr[c] -= e * ui[c];
          }
          wr[i] = q;
          er[i - i1] = e;
        }
      }
    }
    // Lazy update of the columns after the block: W[:, i2:] -= Err @ U[i1:i2, i2:].
    if (i2 < cols) {
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        float* wr = w.data() + r * cols;
        const float* er = err.data() + r * bs;
        for (int64_t k = 0; k < width; ++k) {
          const float e = er[k];
          if (e == 0.0f) continue;
          const float* uk = u + (i1 + k) * cols;
#pragma omp simd
          for (int64_t c = i2; c < cols; ++c) wr[c] -= e * uk[c];
        }
      }
    }
  }
  std::copy(w.begin(), w.end(), reinterpret_cast<float*>(out.mutable_bytes().data()));
  return out;
}

}  // namespace sparsa
