// The format table: one row per packed format (ggml's type_traits). Adding a format is adding a
// row here plus its pack/unpack file and kernels.
#include <fmt/format.h>

#include <array>

#include "cpu/cpu_kernels.h"
#include "format/format_internal.h"

namespace sparsa {
namespace {

constexpr std::array<FormatTraits, 6> kFormats = {{
    {FormatKind::Dense, "dense", format::pack_dense, format::unpack_dense,
     cpu::dense_gemm_reference, cpu::dense_gemm_simd},
    {FormatKind::CSR, "csr", format::pack_csr, format::unpack_csr, cpu::csr_gemm_reference,
     cpu::csr_gemm_simd},
    {FormatKind::BSR, "bsr", format::pack_bsr, format::unpack_bsr, cpu::bsr_gemm_reference,
     cpu::bsr_gemm_simd},
    {FormatKind::Bitmap, "bitmap", format::pack_bitmap, format::unpack_bitmap,
     cpu::bitmap_gemm_reference, cpu::bitmap_gemm_simd},
    {FormatKind::NM, "nm", format::pack_nm, format::unpack_nm, cpu::nm_gemm_reference,
     cpu::nm_gemm_simd},
    {FormatKind::VNM, "vnm", format::pack_vnm, format::unpack_vnm, cpu::vnm_gemm_reference,
     cpu::vnm_gemm_simd},
}};

}  // namespace

const FormatTraits& format_traits(FormatKind kind) {
  for (const auto& row : kFormats)
    if (row.kind == kind) return row;
  fail("unknown packed format kind {}", static_cast<int>(kind));
}

FormatKind parse_format(std::string_view name) {
  for (const auto& row : kFormats)
    if (row.name == name) return row.kind;
  fail("unknown format '{}' (expected one of dense, csr, bsr, bitmap, nm, vnm)", name);
}

std::string_view format_name(FormatKind kind) { return format_traits(kind).name; }

std::span<const FormatTraits> all_formats() { return kFormats; }

FormatKind default_format(const Pattern& pattern) {
  switch (pattern.kind) {
    case PatternKind::Dense:
      return FormatKind::Dense;
    case PatternKind::NM:
      return FormatKind::NM;
    case PatternKind::VNM:
      return FormatKind::VNM;
    case PatternKind::Block:
      return FormatKind::BSR;
    case PatternKind::Unstructured:
    case PatternKind::Rows:
    case PatternKind::Columns:
      return FormatKind::CSR;
  }
  fail("unknown pattern kind {}", static_cast<int>(pattern.kind));
}

}  // namespace sparsa
