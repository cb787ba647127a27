// Packed formats: a pruned dense matrix W[rows, cols] (cols = K, the input dimension) stored as
// named arrays of values and metadata. Byte layouts are written in docs/formats.md; in short:
//
//   dense   values[rows*cols]
//   csr     row_ptr I64[rows+1], col_idx U16 (U32 when cols > 65536) [nnz], values[nnz]
//   bsr     block_row_ptr I64[R+1], block_col U32[nblocks], values[nblocks*bh*bw]
//           (R = ceil(rows/bh); each block row-major, zero-padded at ragged edges)
//   bitmap  row_ptr I64[rows+1], bitmap U64[rows*ceil(cols/64)] (bit j of word w = column
//           64w+j), values[nnz] row-major
//   nm      values[rows*G*N] (G = ceil(cols/M); the N kept values of each group, ascending
//           column), indices U32[rows*words_per_row]: each value's offset in its group,
//           b = 2 bits (M = 4), 4 bits (M <= 16) or 8 bits (M <= 32), packed LSB first. For 2:4
//           one U32 covers 32 columns: nibble g = idx0 | idx1 << 2 — the sparse tensor cores'
//           (mma.sp) metadata for one row.
//   vnm     columns U8[RB*CB*4] (RB = ceil(rows/V), CB = ceil(cols/M); the 4 kept column offsets
//           of each V x M block, ascending), values[rows*CB*2] (per row and block the 2 kept
//           values), metadata U32[rows*ceil(CB/8)] (per row and block one nibble idx0 | idx1<<2
//           indexing the block's 4 columns — the 2:4 metadata layout, shared with nm 2:4).
//
// Values keep the dense tensor's dtype (f32, f16 or bf16). Groups and blocks past the matrix
// edge are zero-padded; offsets that point past `cols` always carry the value 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sparsa/error.h"
#include "sparsa/pattern.h"
#include "sparsa/tensor.h"

namespace sparsa {

enum class FormatKind { Dense, CSR, BSR, Bitmap, NM, VNM };

struct PackedArray {
  std::string name;
  DType dtype = DType::U8;
  std::vector<std::byte> bytes;
};

struct PackedMatrix {
  FormatKind format = FormatKind::Dense;
  int64_t rows = 0, cols = 0;  // the dense shape [N, K]
  DType value_dtype = DType::F32;
  Pattern pattern;  // NM: n, m; VNM: v, n, m; BSR: block_rows, block_cols
  std::vector<PackedArray> arrays;  // in the order docs/formats.md lists them

  const PackedArray& array(std::string_view name) const;
  PackedArray& array(std::string_view name);
  template <typename T>
  std::span<const T> as(std::string_view name) const {
    const auto& bytes = array(name).bytes;
    return {reinterpret_cast<const T*>(bytes.data()), bytes.size() / sizeof(T)};
  }
  // All arrays together, in bytes; and per weight of the dense shape.
  size_t total_bytes() const;
  double bytes_per_weight() const;
};

// One row per format (ggml's type_traits): a new format is one row, not twenty switches.
struct GemmArgs;
struct FormatTraits {
  FormatKind kind;
  std::string_view name;  // "dense", "csr", "bsr", "bitmap", "nm", "vnm"
  // Packs a dense tensor (2-D view) whose pruned entries are 0. `pattern` supplies the
  // parameters the format needs (N:M, V:N:M, block shape); throws sparsa::Error if the tensor
  // does not satisfy it.
  PackedMatrix (*pack)(const Tensor& dense, const Pattern& pattern);
  // Back to the dense [rows, cols] tensor, exactly.
  Tensor (*unpack)(const PackedMatrix& packed, const std::string& name);
  // Y = X * W^T on the CPU: the scalar reference twin and the SIMD kernel.
  void (*gemm_reference)(const GemmArgs& args);
  void (*gemm_simd)(const GemmArgs& args);
};

const FormatTraits& format_traits(FormatKind kind);
// "dense", "csr", "bsr", "bitmap", "nm", "vnm"; throws sparsa::Error for anything else.
FormatKind parse_format(std::string_view name);
std::string_view format_name(FormatKind kind);
// Every format, for tests and benchmarks.
std::span<const FormatTraits> all_formats();

// The format a pattern packs into by default: N:M -> nm, V:N:M -> vnm, block -> bsr,
// unstructured/rows/cols -> csr, dense -> dense.
FormatKind default_format(const Pattern& pattern);

inline PackedMatrix pack(const Tensor& dense, FormatKind format, const Pattern& pattern) {
  return format_traits(format).pack(dense, pattern);
}
inline Tensor unpack(const PackedMatrix& packed, const std::string& name = "unpacked") {
  return format_traits(packed.format).unpack(packed, name);
}

}  // namespace sparsa
