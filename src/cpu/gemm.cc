// sparsa::gemm(): checks the shapes, then hands off to the format table's kernel for the backend.
#include <fmt/format.h>

#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa {

void gemm(std::span<const float> x, int64_t m, const PackedMatrix& w, std::span<float> y,
          Backend backend) {
  const auto who = format::describe(w);
  if (m < 0) fail("gemm with {}: m = {} rows of X is negative", who, m);
  // Shallow check: arrays present with the sizes the shape implies (O(1); pack built them, and
  // matrices read from files get the deep check when they are loaded).
  format::check_packed(w, false);
  const int64_t k = w.cols, n = w.rows;
  // Compare by division so that huge m cannot overflow m*K.
  if (k > 0 && static_cast<uint64_t>(m) > x.size() / static_cast<uint64_t>(k))
    fail("gemm with {}: x holds {} floats, but X[{}, {}] needs {}", who, x.size(), m, k,
         static_cast<double>(m) * static_cast<double>(k));
  if (n > 0 && static_cast<uint64_t>(m) > y.size() / static_cast<uint64_t>(n))
    fail("gemm with {}: y holds {} floats, but Y[{}, {}] needs {}", who, y.size(), m, n,
         static_cast<double>(m) * static_cast<double>(n));
  const FormatTraits& traits = format_traits(w.format);
  const auto kernel = backend == Backend::Reference ? traits.gemm_reference : traits.gemm_simd;
  if (kernel == nullptr)
    fail("gemm with {}: no {} kernel for format {}", who,
         backend == Backend::Reference ? "reference" : "SIMD", traits.name);
  if (m == 0 || n == 0) return;
  const GemmArgs args{x.data(), m, k, &w, y.data(), n};
  kernel(args);
}

}  // namespace sparsa
