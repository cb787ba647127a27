// Bitmap matrices (fp16 values, or int8 / int4 codes in groups of 128) -> the GPU tiling of the bitmap
// decode kernels (CompressedTiled::bitmap in sparsa/cuda_compressed.h), and its host decode.
//
// Each lane owns the 16 positions of its two m16n8k16 A fragments per 32-column step; the kept
// ones are stored in the lane's own run, in (step, position) order, so the kernel expands them
// with one predicated shared-memory load per position and no search. Int8: a row's value ranks
// (and so its groups) follow its columns, so per row and chunk the pairs of the (at most three)
// groups it touches and the columns where the second and third begin decide every value's pair.
#include <algorithm>
#include <bit>
#include <cstring>

#include "codec/codec_internal.h"
#include "cuda/compressed_internal.h"
#include "format/format_internal.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_compressed.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/half.h"

namespace sparsa::cuda {
namespace {

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// Column of position i of lane (g, t) in a 32-column step, and its row (0..15) in the tile.
int position_col(int i, int t) { return 16 * (i >> 3) + 2 * t + (i & 1) + 8 * ((i >> 2) & 1); }
int position_row(int i, int g) { return g + 8 * ((i >> 1) & 1); }

struct Source {
  int64_t rows = 0, cols = 0;
  const int64_t* row_ptr = nullptr;
  const uint64_t* bits = nullptr;
  int64_t words = 0;
  std::vector<int32_t> prefix;  // kept values before each bitmap word, within its row
  bool kept(int64_t r, int64_t c) const {
    return r < rows && c < cols && (bits[r * words + c / 64] >> (c % 64) & 1);
  }
  int64_t rank(int64_t r, int64_t c) const {  // index of (r, c) among row r's kept values
    const uint64_t below = bits[r * words + c / 64] & ((uint64_t{1} << (c % 64)) - 1);
    return prefix[r * words + c / 64] + std::popcount(below);
  }
};

Source source_of(const PackedMatrix& pk) {
  Source s;
  s.rows = pk.rows;
  s.cols = pk.cols;
  s.words = (pk.cols + 63) / 64;
  s.row_ptr = pk.as<int64_t>("row_ptr").data();
  s.bits = pk.as<uint64_t>("bitmap").data();
  s.prefix.resize(static_cast<size_t>(pk.rows * s.words));
  for (int64_t r = 0; r < pk.rows; ++r) {
    int32_t n = 0;
    for (int64_t w = 0; w < s.words; ++w) {
      s.prefix[r * s.words + w] = n;
      n += std::popcount(s.bits[r * s.words + w]);
    }
  }
  return s;
}

// value(r, rank) -> fp16 bits or code; pairs(r, group) -> (offset, scale) half pair.
template <typename Value, typename Pair>
CompressedTiled build(const Source& src, CodeType code, Value value, Pair pair, int group) {
  CompressedTiled t;
  t.rows = src.rows;
  t.cols = src.cols;
  t.bitmap = true;
  t.code = code;
  t.warps = kBitmapWarps;
  t.ksteps = 8;
  t.m = 0;
  t.rows_padded = round_up(src.rows, kRowTile);
  t.kchunks = (src.cols + kBitmapChunkCols - 1) / kBitmapChunkCols;
  const int vbytes = code == CodeType::Int8 ? 1 : 2;
  const int head = bitmap_head_bytes(code);
  const int64_t groups = t.rows_padded / (16 * kBitmapWarps);
  std::vector<uint8_t> slot;
  for (int64_t rg = 0; rg < groups; ++rg)
    for (int64_t kc = 0; kc < t.kchunks; ++kc)
      for (int w = 0; w < kBitmapWarps; ++w) {
        const int64_t rt = rg * kBitmapWarps + w, row0 = rt * 16, col0 = kc * kBitmapChunkCols;
        t.offsets.push_back(static_cast<uint32_t>(t.tiles.size() / 16));
        slot.assign(head, 0);
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane >> 2, tt = lane & 3;
          uint32_t mask[4] = {0, 0, 0, 0};
          for (int s = 0; s < 8; ++s)
            for (int i = 0; i < 16; ++i) {
              const int64_t r = row0 + position_row(i, g), c = col0 + 32 * s + position_col(i, tt);
              if (!src.kept(r, c)) continue;
              mask[s / 2] |= 1u << (16 * (s % 2) + i);
              const uint16_t v = value(r, src.rank(r, c));
              slot.push_back(static_cast<uint8_t>(v & 0xff));
              if (vbytes == 2) slot.push_back(static_cast<uint8_t>(v >> 8));
            }
          std::memcpy(slot.data() + lane * 16, mask, 16);
        }
        if (code == CodeType::Int8)
          for (int rr = 0; rr < 16; ++rr) {
            const int64_t r = row0 + rr;
            uint32_t words[4] = {0, 0, 0, 256u | 256u << 16};
            if (r < src.rows) {
              int64_t first = -1;  // the row's first kept column in the chunk
              uint32_t b[2] = {256, 256};
              for (int c = 0; c < kBitmapChunkCols; ++c) {
                if (!src.kept(r, col0 + c)) continue;
                const int64_t rank = src.rank(r, col0 + c);
                if (first < 0) first = rank / group;
                const int64_t gi = rank / group - first;
                if (gi > 2) fail("tile_bitmap: row {} chunk {}: more than 3 groups", r, kc);
                if (gi > 0 && b[gi - 1] == 256) b[gi - 1] = static_cast<uint32_t>(c);
              }
              if (first >= 0)
                for (int j = 0; j < 3; ++j) words[j] = pair(r, first + j);
              words[3] = b[0] | b[1] << 16;
            }
            std::memcpy(slot.data() + 512 + rr * 16, words, 16);
          }
        slot.resize(static_cast<size_t>(round_up(static_cast<int64_t>(slot.size()), 16)), 0);
        t.max_slot_bytes = std::max<int64_t>(t.max_slot_bytes, static_cast<int64_t>(slot.size()));
        t.tiles.insert(t.tiles.end(), slot.begin(), slot.end());
        if (t.tiles.size() / 16 > 0xffffffffull)
          fail("tile_bitmap: [{}, {}]: more than 64 GB of tiles", src.rows, src.cols);
      }
  t.offsets.push_back(static_cast<uint32_t>(t.tiles.size() / 16));
  return t;
}

}  // namespace

CompressedTiled tile_bitmap(const PackedMatrix& pk) {
  if (pk.format != FormatKind::Bitmap)
    fail("tile_bitmap: {}: not a bitmap matrix", codec::describe(pk));
  if (pk.value_dtype != DType::F16)
    fail("tile_bitmap: {}: the bitmap GPU kernels take f16 values", codec::describe(pk));
  if (pk.rows <= 0 || pk.cols <= 0) fail("tile_bitmap: {}: empty matrix", codec::describe(pk));
  format::check_packed(pk, true);
  const Source src = source_of(pk);
  const auto values = pk.as<uint16_t>("values");
  return build(
      src, CodeType::F16, [&](int64_t r, int64_t rank) { return values[src.row_ptr[r] + rank]; },
      [](int64_t, int64_t) { return 0u; }, 1);
}

CompressedTiled tile_bitmap_compressed(const CompressedMatrix& w) {
  const PackedMatrix& pk = w.packed;
  const std::string what = codec::describe(w);
  // int4 codes are widened to one byte each here and run through the int8 kernels (same
  // arithmetic, (1024 + u - offset) * scale): correct, but they read as many bytes as int8.
  const bool int4 = w.codec.kind == CodecKind::Int4;
  if (w.codec.kind != CodecKind::Int8 && !int4)
    fail("tile_compressed: {}: the bitmap GPU kernels take int8 or int4 codes (or f16 values)",
         what);
  if (w.codec.group_size != 128)
    fail("tile_compressed: {}: group size {} (the bitmap GPU kernels take groups of 128)", what,
         w.codec.group_size);
  if (pk.rows <= 0 || pk.cols <= 0) fail("tile_compressed: {}: empty matrix", what);
  const Source src = source_of(pk);
  const codec::ValueLayout layout = codec::value_layout(pk);
  const int64_t n = layout.count();
  const std::vector<int64_t> gptr = codec::group_ptr(layout, 128);
  const int64_t ngroups = gptr.back();
  const auto scales =
      codec::array_span<uint16_t>(codec::expect_array(w, "scales", DType::F16, ngroups));
  const uint8_t* zeros = nullptr;
  if (!w.codec.symmetric)
    zeros = codec::array_span<uint8_t>(codec::expect_array(w, "zeros", DType::U8, ngroups)).data();
  const auto* codes = reinterpret_cast<const uint8_t*>(
      int4 ? codec::expect_array(w, "codes", DType::U8, (n + 1) / 2).bytes.data()
           : codec::expect_array(w, "codes", w.codec.symmetric ? DType::I8 : DType::U8, n)
                 .bytes.data());
  const bool sym = w.codec.symmetric;
  const int sym_zero = int4 ? 8 : 128;
  return build(
      src, CodeType::Int8,
      [&](int64_t r, int64_t rank) -> uint16_t {
        const int64_t i = src.row_ptr[r] + rank;
        if (int4) return codec::get_nibble(codes, i);  // stored as u + zero-point 8 when sym
        const uint8_t c = codes[i];
        return sym ? static_cast<uint8_t>(static_cast<int8_t>(c) + 128) : c;
      },
      [&](int64_t r, int64_t g) -> uint32_t {
        if (g >= gptr[r + 1] - gptr[r]) return f16_from_f32(1024.0f);  // no such group
        const int64_t gg = gptr[r] + g;
        const int zero = zeros ? zeros[gg] : sym_zero;
        return f16_from_f32(1024.0f + static_cast<float>(zero)) |
               (static_cast<uint32_t>(scales[gg]) << 16);
      },
      128);
}

std::vector<float> bitmap_tiled_row(const CompressedTiled& t, int64_t row) {
  std::vector<float> dense(t.cols, 0.0f);
  const int64_t rt = row / 16, rg = rt / kBitmapWarps;
  const int w = static_cast<int>(rt % kBitmapWarps), rr = static_cast<int>(row % 16);
  const int head = bitmap_head_bytes(t.code);
  const int vbytes = t.code == CodeType::Int8 ? 1 : 2;
  for (int64_t kc = 0; kc < t.kchunks; ++kc) {
    const int64_t idx = (rg * t.kchunks + kc) * kBitmapWarps + w;
    const uint8_t* slot = t.tiles.data() + int64_t{t.offsets[idx]} * 16;
    uint32_t pairs[4] = {0, 0, 0, 0};
    if (t.code == CodeType::Int8) std::memcpy(pairs, slot + 512 + rr * 16, 16);
    int64_t start = 0;  // the lane's run
    for (int lane = 0; lane < 32; ++lane) {
      uint32_t mask[4];
      std::memcpy(mask, slot + lane * 16, 16);
      int64_t p = start;
      const int g = lane >> 2, tt = lane & 3;
      for (int s = 0; s < 8; ++s)
        for (int i = 0; i < 16; ++i) {
          if (!(mask[s / 2] >> (16 * (s % 2) + i) & 1)) continue;
          const int64_t at = head + p++ * vbytes;
          if (position_row(i, g) != rr) continue;
          const int c = 32 * s + position_col(i, tt);
          float v;
          if (t.code == CodeType::Int8) {
            const uint32_t b1 = pairs[3] & 0xffff, b2 = pairs[3] >> 16;
            const uint32_t pr = pairs[(c >= static_cast<int>(b1)) + (c >= static_cast<int>(b2))];
            const float offset = f32_from_f16(static_cast<uint16_t>(pr & 0xffff));
            const float scale = f32_from_f16(static_cast<uint16_t>(pr >> 16));
            v = f32_from_f16(f16_from_f32((1024.0f + slot[at] - offset) * scale));
          } else {
            v = f32_from_f16(static_cast<uint16_t>(slot[at] | slot[at + 1] << 8));
          }
          const int64_t col = kc * kBitmapChunkCols + c;
          if (col < t.cols) dense[col] = v;
        }
      start = p;
    }
  }
  return dense;
}

}  // namespace sparsa::cuda
