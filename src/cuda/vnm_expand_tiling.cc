// Host twin of vnm_expand_to_nm24 (src/cuda/vnm_expand.cu): a V:2:M tiling with M % 4 == 0 read
// back into the canonical 2:4 arrays of the same W (each kept value at its column of K), then
// tile_nm24. Written apart from the device kernel, value by value, so a test can compare the two
// bit for bit; a second test decodes the result to the dense W.
#include <vector>

#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"

namespace sparsa::cuda {

Nm24Tiled expand_vnm_tiling(const VnmTiled& t) {
  if (t.m < 4 || t.m % 4 != 0)
    fail("expand_vnm_tiling: V:2:M with M = {} is 2:4 over K only for M a multiple of 4", t.m);
  const int64_t groups = (t.cols + 3) / 4, words = (groups + 7) / 8;
  const int64_t ksteps = t.blocks_padded / 8, kchunks = t.blocks_padded / 64;
  // Canonical 2:4 arrays; a group's kept positions are collected first, then encoded.
  std::vector<int> count(static_cast<size_t>(t.rows * groups), 0);
  std::vector<int> position(static_cast<size_t>(t.rows * groups * 2), 0);
  std::vector<uint16_t> kept(static_cast<size_t>(t.rows * groups * 2), 0);
  for (int64_t row = 0; row < t.rows; ++row) {
    const int64_t rt = row / 16;
    const int g = static_cast<int>(row % 8), hi = static_cast<int>((row % 16) / 8);
    for (int64_t b = 0; b < t.blocks; ++b) {
      const int64_t s = b / 8;
      const int n = static_cast<int>(b % 8);
      // values: lane 4g + (n % 4), halves 2 (hi + 2 (n / 4)) and + 1 (tiling.cc's a[i] order)
      const size_t at = static_cast<size_t>(((rt * ksteps + s) * 32 + g * 4 + n % 4) * 8 +
                                            2 * (hi + 2 * (n / 4)));
      const uint16_t value[2] = {t.values[at], t.values[at + 1]};
      // metadata: lane 4g + 2 (s % 2) + n / 4, word (s % 8) / 2, nibble n % 4 of row half hi
      const uint32_t word = t.meta[static_cast<size_t>(
          ((rt * kchunks + s / 8) * 32 + g * 4 + 2 * (s % 2) + n / 4) * 4 + (s % 8) / 2)];
      const uint32_t nibble = (word >> (16 * hi + 4 * (n % 4))) & 0xfu;
      const uint32_t columns = t.columns[static_cast<size_t>((row / t.v) * t.blocks_padded + b)];
      for (int slot = 0; slot < 2; ++slot) {
        const int offset =
            static_cast<int>((columns >> (8 * ((nibble >> (2 * slot)) & 3))) & 0xffu);
        const int64_t q = b * (t.m / 4) + offset / 4;
        if (q >= groups) continue;
        const size_t k = static_cast<size_t>(row * groups + q);
        position[2 * k + count[k]] = offset % 4;
        kept[2 * k + count[k]] = value[slot];
        ++count[k];
      }
    }
  }
  std::vector<uint16_t> values(static_cast<size_t>(t.rows * groups * 2), 0);
  std::vector<uint32_t> indices(static_cast<size_t>(t.rows * words), 0);
  for (int64_t row = 0; row < t.rows; ++row) {
    for (int64_t q = 0; q < groups; ++q) {
      const size_t k = static_cast<size_t>(row * groups + q);
      uint32_t nibble = 0x4;  // nothing kept: columns 0 and 1, zeros
      if (count[k] == 2) {
        nibble = static_cast<uint32_t>(position[2 * k] | (position[2 * k + 1] << 2));
        values[2 * k] = kept[2 * k];
        values[2 * k + 1] = kept[2 * k + 1];
      } else if (count[k] == 1 && position[2 * k] < 3) {  // kept at p, zero at p + 1
        nibble = static_cast<uint32_t>(position[2 * k] | ((position[2 * k] + 1) << 2));
        values[2 * k] = kept[2 * k];
      } else if (count[k] == 1) {  // kept at 3, zero at 2
        nibble = 2u | (3u << 2);
        values[2 * k + 1] = kept[2 * k];
      }
      indices[static_cast<size_t>(row * words + q / 8)] |= nibble << (4 * (q % 8));
    }
  }
  return tile_nm24(values.data(), indices.data(), t.rows, t.cols, t.type);
}

}  // namespace sparsa::cuda
