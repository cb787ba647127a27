// Where a lane's words lie in a slot of the compressed 2:4 / V:2:M tiling (one 16-row tile, one K
// chunk; CompressedTiled in sparsa/cuda_compressed.h): the code words, then ksteps / 8 metadata
// blocks of 512 bytes, then the rows' scale pairs. One definition for every kernel that reads
// slots: the device expansion (compressed_expand.cu) and V:2:M's codes prefill from global
// memory, v12's codes variant and the 2:4 codes prefill from shared memory. (The decode kernels
// of compressed_decode.cu stream whole slots through their rings and index them their own way.)
#pragma once

#include <cstdint>

#include "cuda/compressed_common.cuh"

namespace sparsa::cuda::detail {

template <CodeType kCode>
struct SlotLayout {
  int shift;  // log2 of the chunk's k-steps (3 or 4)
  int spc;    // scale pairs per row and chunk

  __host__ __device__ static constexpr int shift_of(int ksteps) { return ksteps == 16 ? 4 : 3; }
  // Bytes of the code words: 16 per lane and 2 (int8) or 4 (4-bit) k-steps.
  __host__ __device__ constexpr uint32_t code_bytes() const {
    return (kCode == CodeType::Int8 ? 256u : 128u) << shift;
  }
  __host__ __device__ constexpr uint32_t meta_bytes() const { return 64u << shift; }
  // Lane `lane`'s first code word of k-step st (int8: the second 4 bytes on): u32 st % 4 of its
  // 16-byte word st / 4 (4-bit), u32s 2 (st % 2), +1 of word st / 2 (int8).
  __host__ __device__ static constexpr uint32_t code(int st, int lane) {
    return kCode == CodeType::Int8 ? ((st / 2) * 32 + lane) * 16 + (st % 2) * 8
                                   : ((st / 4) * 32 + lane) * 16 + (st % 4) * 4;
  }
  // Lane `lane`'s metadata word of the k-step pair holding st (selector st % 2); its 16-byte
  // block of 8 k-steps starts at meta(8 (st / 8), lane).
  __host__ __device__ constexpr uint32_t meta(int st, int lane) const {
    return code_bytes() + (st / 8) * 512 + lane * 16 + ((st % 8) / 2) * 4;
  }
  // The (offset, scale) pair of row `row` (0..15) for k-step st.
  __host__ __device__ constexpr uint32_t pair(int st, int row) const {
    return code_bytes() + meta_bytes() + (row * spc + ((st * spc) >> shift)) * 4;
  }
};

// The A fragment of k-step st from a slot whose 32-bit words `load(byte offset)` reads (shared or
// global memory): the lane's code word(s), its rows' scale pairs (int codes), decode_a.
template <CodeType kCode, typename Load>
__device__ __forceinline__ void decode_slot_kstep(uint32_t (&a)[4], const SlotLayout<kCode>& s,
                                                  Load load, int st, int lane, const Book& b0,
                                                  const Book& b1) {
  const uint32_t c = SlotLayout<kCode>::code(st, lane);
  const uint32_t w0 = load(c), w1 = kCode == CodeType::Int8 ? load(c + 4) : 0u;
  uint32_t lo = 0, hi = 0;
  if constexpr (kCode != CodeType::Codebook4) {
    lo = load(s.pair(st, lane / 4));
    hi = load(s.pair(st, lane / 4 + 8));
  }
  decode_a<kCode>(a, w0, w1, lo, hi, b0, b1);
}

}  // namespace sparsa::cuda::detail
