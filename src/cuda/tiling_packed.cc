// tile_nm24 / tile_vnm from a PackedMatrix (sparsa/format.h): checks the format and pattern,
// then hands the canonical arrays to the raw-array tilers in tiling.cc.
#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"
#include "sparsa/format.h"

namespace sparsa::cuda {

namespace {
ElemType value_type(const PackedMatrix& packed, const char* what) {
  if (packed.value_dtype == DType::F16) return ElemType::F16;
  if (packed.value_dtype == DType::BF16) return ElemType::BF16;
  fail("{}: GPU kernels take fp16 or bf16 values, not {}", what, dtype_name(packed.value_dtype));
}
}  // namespace

Nm24Tiled tile_nm24(const PackedMatrix& packed) {
  if (packed.format != FormatKind::NM || packed.pattern.n != 2 || packed.pattern.m != 4)
    fail("tile_nm24: packed matrix [{}, {}] is {} {}, not nm 2:4", packed.rows, packed.cols,
         format_name(packed.format), packed.pattern.to_string());
  const ElemType type = value_type(packed, "tile_nm24");
  const auto values = packed.as<uint16_t>("values");
  const auto indices = packed.as<uint32_t>("indices");
  const int64_t groups = (packed.cols + 3) / 4;
  if (static_cast<int64_t>(values.size()) < packed.rows * groups * 2 ||
      static_cast<int64_t>(indices.size()) < packed.rows * ((groups + 7) / 8))
    fail("tile_nm24: packed matrix [{}, {}]: arrays too short", packed.rows, packed.cols);
  return tile_nm24(values.data(), indices.data(), packed.rows, packed.cols, type);
}

VnmTiled tile_vnm(const PackedMatrix& packed) {
  if (packed.format != FormatKind::VNM || packed.pattern.n != 2)
    fail("tile_vnm: packed matrix [{}, {}] is {} {}, not vnm V:2:M", packed.rows, packed.cols,
         format_name(packed.format), packed.pattern.to_string());
  const ElemType type = value_type(packed, "tile_vnm");
  const int v = packed.pattern.v, m = packed.pattern.m;
  const auto columns = packed.as<uint8_t>("columns");
  const auto values = packed.as<uint16_t>("values");
  const auto metadata = packed.as<uint32_t>("metadata");
  const int64_t blocks = (packed.cols + m - 1) / m, row_groups = (packed.rows + v - 1) / v;
  if (static_cast<int64_t>(columns.size()) < row_groups * blocks * 4 ||
      static_cast<int64_t>(values.size()) < packed.rows * blocks * 2 ||
      static_cast<int64_t>(metadata.size()) < packed.rows * ((blocks + 7) / 8))
    fail("tile_vnm: packed matrix [{}, {}]: arrays too short", packed.rows, packed.cols);
  return tile_vnm(columns.data(), values.data(), metadata.data(), packed.rows, packed.cols, v, m,
                  type);
}

}  // namespace sparsa::cuda
