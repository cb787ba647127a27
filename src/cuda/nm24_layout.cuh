// Reading the A operand of 2:4 kernels from the row-major device layout values_k (session 7).
//
// values_k is [rows_padded][cols_padded / 2] kept values (docs/formats.md, "GPU tiling"). The
// A operand of mma.sp m16n8k32 (and of each warp of wgmma.sp m64nNk32 with A in registers) is
// 16 rows x 16 kept values with exactly the register layout of the dense m16n8k16 A fragment,
// which ldmatrix.x4 produces from four 8 x 8 matrices: rows 0-7 / 8-15 of kept columns 0-7,
// then of kept columns 8-15. So a reader copies each k-step's 16 rows x 32 bytes into a 512-byte
// block laid out [piece 0..1][row 0..15][16 B] and loads its fragment with ldmatrix.x4: lane l
// gives the address block + 16 l (matrix l / 8 = piece l / 16, rows 8 ((l / 8) & 1) .. + 7),
// which is the same address a lane reads with LDS.128 in the fragment layout, and 8 rows of one
// piece are 128 contiguous bytes (no bank conflict). Lane l copies exactly that 16-byte piece:
// row l % 16, kept columns 16 s + 8 (l / 16) .. + 7, i.e. k-step s at `values_k_lane(...) + 2 s`.
// Unlike the fragment layout a lane's ldmatrix reads what other lanes copied: a warp-level (or
// wider) barrier must sit between the cp.async wait and the ldmatrix.
#pragma once

#include <cstdint>

namespace sparsa::cuda::detail {

// uint4 per k-step along a row of values_k (16 kept values), and per row.
constexpr int kValuesKStep = 2;
__host__ __device__ __forceinline__ int64_t values_k_row_uint4(int64_t cols_padded) {
  return cols_padded / 16;
}

// Lane `lane`'s source of k-step 0 of 16-row tile `rt` in values_k.
__device__ __forceinline__ const uint4* values_k_lane(const void* values_k, int64_t rt,
                                                      int64_t cols_padded, int lane) {
  return static_cast<const uint4*>(values_k) + (rt * 16 + (lane & 15)) * values_k_row_uint4(cols_padded) +
         (lane >> 4);
}

// ldmatrix.x4 of the A fragment from a [piece][row] block; "memory" keeps it after the barrier
// that publishes the other lanes' copies.
__device__ __forceinline__ void ldsm_a(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

}  // namespace sparsa::cuda::detail
