// Canonical packed 2:4 / V:2:M arrays -> the GPU tiling the kernels read (docs/formats.md,
// "GPU tiling"). Hand-written: the layout is dictated by the mma.sp fragment and metadata
// registers, which no library describes.
//
// mma.sp m16n8k32 (f16/bf16), lane = 4*g + t (g = groupID, t = threadID_in_group):
//   A (16 x 32, stored compressed 16 x 16): a[i] holds row g + 8*((i>>1)&1), compressed column
//     2t + (i&1) + 8*(i>>2); compressed column c is value (c&1) of 4-column group c>>1.
//   metadata with sparsity selector s: lanes with t in {2s, 2s+1} supply it; lane t' = t - 2s
//     holds the 16 bits of groups 4t'..4t'+3 of row g in its low half and of row g+8 in its
//     high half (nibble per group: idx0 | idx1 << 2, idx0 < idx1).
// So one 16-byte load per lane fetches its whole A fragment, and one u32 per lane carries the
// metadata of two MMAs (selector 0 for the even k-step, 1 for the odd one).
#include <algorithm>
#include <cstring>

#include "sparsa/cuda_kernels.h"
#include "sparsa/error.h"

namespace sparsa::cuda {
namespace {

constexpr uint32_t kPadNibble = 0x4;  // idx0 = 0, idx1 = 1
constexpr uint32_t kPadWord = 0x44444444u;

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// The canonical packing keeps each group's two values in ascending column order; mma.sp wants
// idx0 < idx1 as well. Groups with fewer than two nonzeros may name one column twice: move the
// zero to a free column. Swapped pairs are put back in order. Returns the fixed nibble.
uint32_t fix_nibble(uint32_t nibble, uint16_t& v0, uint16_t& v1, const char* what, int64_t row,
                    int64_t group) {
  uint32_t i0 = nibble & 3, i1 = (nibble >> 2) & 3;
  if (i0 < i1) return nibble;
  if (i0 > i1) {
    std::swap(v0, v1);
    return i1 | (i0 << 2);
  }
  const bool z0 = (v0 & 0x7fff) == 0, z1 = (v1 & 0x7fff) == 0;
  if (!z0 && !z1)
    fail("{}: row {}, group {}: both kept values name column {} of the group", what, row, group,
         i0);
  const uint16_t kept = z0 ? v1 : v0;  // the value at column i0 (or a zero)
  if (i0 == 3) {                       // zero at column 2, kept at 3
    v0 = 0;
    v1 = kept;
    return 2u | (3u << 2);
  }
  v0 = kept;  // kept at i0, zero at i0 + 1
  v1 = 0;
  return i0 | ((i0 + 1) << 2);
}

// Rearranges [rows][groups][2] values plus one metadata word per row and 8 groups into the
// fragment tiling. `word(row, s)` returns the (fixed) metadata word of row `row`, k-step `s`.
template <typename Word>
void tile_fragments(int64_t rows_padded, int64_t groups_padded, const Word& word,
                    const std::vector<uint16_t>& flat_values, int64_t groups,
                    std::vector<uint16_t>& values, std::vector<uint32_t>& meta) {
  const int64_t ksteps = groups_padded / 8, kchunks = groups_padded / 64;
  const int64_t row_tiles = rows_padded / 16;
  values.assign(static_cast<size_t>(rows_padded * groups_padded * 2), 0);
  meta.assign(static_cast<size_t>(row_tiles * kchunks * 32 * 4), kPadWord);
  const int64_t rows = static_cast<int64_t>(flat_values.size()) / std::max<int64_t>(1, groups * 2);
  for (int64_t rt = 0; rt < row_tiles; ++rt) {
    for (int64_t s = 0; s < ksteps; ++s) {
      uint16_t* out = values.data() + ((rt * ksteps + s) * 32) * 8;
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 8; ++i) {
          const int64_t row = rt * 16 + g + 8 * ((i >> 1) & 1);
          const int c = 2 * t + (i & 1) + 8 * (i >> 2);
          const int64_t group = s * 8 + (c >> 1);
          uint16_t v = 0;
          if (row < rows && group < groups) v = flat_values[(row * groups + group) * 2 + (c & 1)];
          out[lane * 8 + i] = v;
        }
      }
    }
    for (int64_t kc = 0; kc < kchunks; ++kc) {
      uint32_t* out = meta.data() + ((rt * kchunks + kc) * 32) * 4;
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int j = 0; j < 4; ++j) {
          const int64_t s = kc * 8 + 2 * j + (t >> 1);
          const int half = t & 1;
          const uint32_t lo = (word(rt * 16 + g, s) >> (16 * half)) & 0xffffu;
          const uint32_t hi = (word(rt * 16 + g + 8, s) >> (16 * half)) & 0xffffu;
          out[lane * 4 + j] = lo | (hi << 16);
        }
      }
    }
  }
}

// Canonical metadata words -> fixed words, with values fixed alongside. `words_per_row` words
// per row, one nibble per group; groups past `groups` get the padding nibble.
std::vector<uint32_t> fix_words(const uint32_t* words, int64_t rows, int64_t groups,
                                int64_t words_per_row, std::vector<uint16_t>& values,
                                const char* what) {
  std::vector<uint32_t> fixed(static_cast<size_t>(rows * words_per_row));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t w = 0; w < words_per_row; ++w) {
      uint32_t in = words[r * words_per_row + w], out = 0;
      for (int n = 0; n < 8; ++n) {
        const int64_t group = w * 8 + n;
        uint32_t nibble = kPadNibble;
        if (group < groups) {
          uint16_t& v0 = values[(r * groups + group) * 2];
          uint16_t& v1 = values[(r * groups + group) * 2 + 1];
          nibble = fix_nibble((in >> (4 * n)) & 0xf, v0, v1, what, r, group);
        }
        out |= nibble << (4 * n);
      }
      fixed[r * words_per_row + w] = out;
    }
  }
  return fixed;
}

void check_type(ElemType type, const char* what) {
  if (type != ElemType::F16 && type != ElemType::BF16)
    fail("{}: GPU kernels take fp16 or bf16 values", what);
}

}  // namespace

Nm24Tiled tile_nm24(const uint16_t* values, const uint32_t* indices, int64_t rows, int64_t cols,
                    ElemType type) {
  check_type(type, "tile_nm24");
  if (rows <= 0 || cols <= 0) fail("tile_nm24: empty matrix [{}, {}]", rows, cols);
  Nm24Tiled t;
  t.rows = rows;
  t.cols = cols;
  t.type = type;
  t.rows_padded = round_up(rows, kRowTile);
  t.cols_padded = round_up(cols, kKChunk);
  const int64_t groups = (cols + 3) / 4, words_per_row = (groups + 7) / 8;
  std::vector<uint16_t> flat(values, values + rows * groups * 2);
  const auto fixed = fix_words(indices, rows, groups, words_per_row, flat, "nm 2:4 metadata");
  auto word = [&](int64_t row, int64_t s) -> uint32_t {
    if (row >= rows || s >= words_per_row) return kPadWord;
    return fixed[row * words_per_row + s];
  };
  tile_fragments(t.rows_padded, t.cols_padded / 4, word, flat, groups, t.values, t.meta);
  return t;
}

VnmTiled tile_vnm(const uint8_t* columns, const uint16_t* values, const uint32_t* metadata,
                  int64_t rows, int64_t cols, int v, int m, ElemType type) {
  check_type(type, "tile_vnm");
  if (rows <= 0 || cols <= 0) fail("tile_vnm: empty matrix [{}, {}]", rows, cols);
  if (v != 16 && v != 32 && v != 64 && v != 128)
    fail("tile_vnm: V = {} (the GPU kernels take V in 16, 32, 64, 128)", v);
  if (m < 4 || m > 256) fail("tile_vnm: M = {} (4 <= M <= 256)", m);
  VnmTiled t;
  t.rows = rows;
  t.cols = cols;
  t.v = v;
  t.m = m;
  t.type = type;
  t.blocks = (cols + m - 1) / m;
  t.blocks_padded = round_up(t.blocks, 64);
  t.rows_padded = round_up(rows, kRowTile);
  t.row_groups_padded = (t.rows_padded + v - 1) / v;
  const int64_t row_groups = (rows + v - 1) / v, words_per_row = (t.blocks + 7) / 8;
  std::vector<uint16_t> flat(values, values + rows * t.blocks * 2);
  const auto fixed = fix_words(metadata, rows, t.blocks, words_per_row, flat, "vnm metadata");
  auto word = [&](int64_t row, int64_t s) -> uint32_t {
    if (row >= rows || s >= words_per_row) return kPadWord;
    return fixed[row * words_per_row + s];
  };
  tile_fragments(t.rows_padded, t.blocks_padded, word, flat, t.blocks, t.values, t.meta);
  t.columns.assign(static_cast<size_t>(t.row_groups_padded * t.blocks_padded), 0x03020100u);
  for (int64_t rb = 0; rb < row_groups; ++rb) {
    for (int64_t cb = 0; cb < t.blocks; ++cb) {
      const uint8_t* c = columns + (rb * t.blocks + cb) * 4;
      for (int j = 0; j < 4; ++j) {
        if (c[j] >= m || (j > 0 && c[j] <= c[j - 1]))
          fail(
              "vnm columns: row group {}, block {}: offsets {} {} {} {} are not ascending in 0..{}",
              rb, cb, c[0], c[1], c[2], c[3], m - 1);
      }
      uint32_t packed;
      std::memcpy(&packed, c, 4);
      t.columns[rb * t.blocks_padded + cb] = packed;
    }
  }
  return t;
}

}  // namespace sparsa::cuda
