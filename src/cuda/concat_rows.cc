// Row concatenation of packed matrices (sparsa/cuda_model.h): the fused q|k|v and gate|up
// products of the CUDA forward. Every array of the dense, nm and vnm layouts is row-major with
// the row (vnm: the block of V rows) outermost, so the arrays of the parts are appended as
// bytes; this needs every part but the last to end on a row-block boundary.
#include <string>

#include "sparsa/cuda_model.h"
#include "sparsa/error.h"
#include "sparsa/format.h"

namespace sparsa::cuda {
namespace {

std::string why_not(std::span<const PackedMatrix* const> parts) {
  if (parts.empty()) return "no matrices";
  const PackedMatrix& first = *parts[0];
  if (first.format != FormatKind::Dense && first.format != FormatKind::NM &&
      first.format != FormatKind::VNM)
    return std::string("format ") + std::string(format_name(first.format)) +
           " (only dense, nm and vnm)";
  for (size_t i = 0; i < parts.size(); ++i) {
    const PackedMatrix& p = *parts[i];
    if (p.format != first.format) return "the formats differ";
    if (p.cols != first.cols) return "the column counts differ";
    if (p.value_dtype != first.value_dtype) return "the value types differ";
    if (p.format != FormatKind::Dense && !(p.pattern == first.pattern))
      return "the patterns differ";
    if (p.arrays.size() != first.arrays.size()) return "the array lists differ";
    for (size_t a = 0; a < p.arrays.size(); ++a)
      if (p.arrays[a].name != first.arrays[a].name || p.arrays[a].dtype != first.arrays[a].dtype)
        return "the array lists differ";
    // A vnm block of V rows shares its columns: a part may not end inside one (but the last).
    if (p.format == FormatKind::VNM && i + 1 < parts.size() && p.rows % p.pattern.v != 0)
      return "part " + std::to_string(i) + " has " + std::to_string(p.rows) +
             " rows, not a multiple of V = " + std::to_string(p.pattern.v);
  }
  return {};
}

}  // namespace

bool rows_concatenable(std::span<const PackedMatrix* const> parts) {
  return why_not(parts).empty();
}

PackedMatrix concat_rows(std::span<const PackedMatrix* const> parts, const std::string& name) {
  const std::string problem = why_not(parts);
  if (!problem.empty()) fail("{}: cannot concatenate the rows of the packed matrices: {}", name, problem);
  PackedMatrix out;
  const PackedMatrix& first = *parts[0];
  out.format = first.format;
  out.cols = first.cols;
  out.value_dtype = first.value_dtype;
  out.pattern = first.pattern;
  for (const PackedArray& a : first.arrays) out.arrays.push_back(PackedArray{a.name, a.dtype, {}});
  for (const PackedMatrix* p : parts) {
    out.rows += p->rows;
    for (size_t a = 0; a < p->arrays.size(); ++a)
      out.arrays[a].bytes.insert(out.arrays[a].bytes.end(), p->arrays[a].bytes.begin(),
                                 p->arrays[a].bytes.end());
  }
  return out;
}

}  // namespace sparsa::cuda
