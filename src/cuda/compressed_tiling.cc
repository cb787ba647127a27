// Compressed nm 2:4 / V:2:M matrices (sparsa/codec.h) -> the GPU tiling of the compressed
// decode kernels (sparsa/cuda_compressed.h), and the host decode of that tiling.
//
// Fragment positions are those of tiling.cc: in k-step s, lane 4*g + t holds the 8 halves
// i = 0..7 of its mma.sp A fragment, half i being row g + 8*((i>>1)&1), compressed column
// c = 2t + (i&1) + 8*(i>>2), i.e. value (c&1) of 4-column group (or V:2:M block) 8s + (c>>1).
// Register a[r] holds halves 2r (low) and 2r+1 (high). The codes of those 8 halves are stored
// in the order that makes their decode cheapest:
//   int4       nibble r = low half of a[r], nibble r+4 = its high half, so
//              a[r] = ((w >> 4r) & 0x000f000f) | 0x64006400 is (1024 + u_lo, 1024 + u_hi).
//   codebook4  low 16 bits: row g's halves 0, 1, 4, 5; high 16 bits: row g+8's 2, 3, 6, 7 — one
//              4-way byte-permute lookup per row.
//   int8       byte i = half i (a[0], a[1] in the first word), each code + 128 for symmetric
//              int8 so every code is an unsigned byte: (1024 + u) via one byte permute.
// Each group's (offset, scale) half pair turns 1024 + u into the value: (x - offset) * scale,
// offset = 1024 + zero-point (1032 int4 sym, 1152 int8 sym). Both steps are exact up to the
// final fp16 rounding of the product.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "codec/codec_internal.h"
#include "cuda/compressed_internal.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_compressed.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/half.h"

namespace sparsa::cuda {
namespace {

constexpr uint32_t kPadNibble = 0x4;  // idx0 = 0, idx1 = 1
constexpr uint32_t kPadWord = 0x44444444u;

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// As tiling.cc's fix_nibble, on codes: mma.sp wants idx0 < idx1; a group naming one column
// twice (at most one nonzero) keeps its nonzero there and moves the zero to a free column.
uint32_t fix_nibble(uint32_t nibble, uint8_t& c0, uint8_t& c1, bool z0, bool z1,
                    const std::string& what, int64_t row, int64_t group) {
  const uint32_t i0 = nibble & 3, i1 = (nibble >> 2) & 3;
  if (i0 < i1) return nibble;
  if (i0 > i1) {
    std::swap(c0, c1);
    return i1 | (i0 << 2);
  }
  if (!z0 && !z1)
    fail("{}: row {}, group {}: both kept values name column {} of the group", what, row, group,
         i0);
  const uint8_t kept = z0 ? c1 : c0, zero = z0 ? c0 : c1;
  if (i0 == 3) {
    c0 = zero;
    c1 = kept;
    return 2u | (3u << 2);
  }
  c0 = kept;
  c1 = zero;
  return i0 | ((i0 + 1) << 2);
}

}  // namespace

int compressed_chunk_steps(bool vnm, CodeType code, int64_t rows, int block_m) {
  const int fixed = compressed_ksteps(vnm, code);
  if (!compressed_ksteps_supported(vnm, code, 8) || !compressed_ksteps_supported(vnm, code, 16))
    return fixed;
  if (const char* env = std::getenv("SPARSA_COMPRESSED_CHUNK_STEPS")) {  // A/B runs
    const int steps = std::atoi(env);
    if (steps == 8 || steps == 16) return steps;
  }
  if (!vnm) return fixed;
  if (rows >= 8192) return 16;
  return code == CodeType::Int8 && block_m <= 8 ? 16 : 8;
}

CompressedTiled tile_compressed(const CompressedMatrix& w, int chunk_steps) {
  const PackedMatrix& pk = w.packed;
  if (pk.format == FormatKind::Bitmap) {
    if (chunk_steps != 0 && chunk_steps != 8)
      fail("tile_compressed: {}: bitmap tilings have chunks of 8 k-steps, not {}",
           codec::describe(w), chunk_steps);
    return tile_bitmap_compressed(w);
  }
  const std::string what = codec::describe(w);
  const bool nm24 = pk.format == FormatKind::NM && pk.pattern.n == 2 && pk.pattern.m == 4;
  const bool vnm = pk.format == FormatKind::VNM && pk.pattern.n == 2;
  if (!nm24 && !vnm)
    fail("tile_compressed: {}: the GPU kernels take nm 2:4, vnm V:2:M or bitmap", what);
  if (vnm && pk.pattern.v != 64 && pk.pattern.v != 128)
    fail("tile_compressed: {}: V = {} (the compressed GPU kernels take V = 64 or 128)", what,
         pk.pattern.v);
  if (vnm && (pk.pattern.m < 4 || pk.pattern.m > 256))
    fail("tile_compressed: {}: M = {} (4 <= M <= 256)", what, pk.pattern.m);
  const CodecKind kind = w.codec.kind;
  if (kind != CodecKind::Int8 && kind != CodecKind::Int4 && kind != CodecKind::Codebook4)
    fail("tile_compressed: {}: the GPU kernels take int8, int4 or codebook4", what);
  if (pk.rows <= 0 || pk.cols <= 0) fail("tile_compressed: {}: empty matrix", what);

  CompressedTiled t;
  t.rows = pk.rows;
  t.cols = pk.cols;
  t.vnm = vnm;
  t.v = vnm ? pk.pattern.v : 0;
  t.m = pk.pattern.m;
  t.code = kind == CodecKind::Int8   ? CodeType::Int8
           : kind == CodecKind::Int4 ? CodeType::Int4
                                     : CodeType::Codebook4;
  t.rows_padded = round_up(pk.rows, kRowTile);
  if (chunk_steps != 0 && !compressed_ksteps_supported(vnm, t.code, chunk_steps)) {
    const bool both =
        compressed_ksteps_supported(vnm, t.code, 8) && compressed_ksteps_supported(vnm, t.code, 16);
    fail("tile_compressed: {}: chunks of {} k-steps (the kernels take {})", what, chunk_steps,
         both ? "8 or 16" : std::to_string(compressed_ksteps(vnm, t.code)));
  }
  t.ksteps = chunk_steps != 0 ? chunk_steps : compressed_chunk_steps(vnm, t.code, pk.rows, t.m);
  const int S = t.ksteps;
  const int64_t groups = (pk.cols + t.m - 1) / t.m;  // 4-column groups or blocks per row
  const int64_t groups_padded = round_up(groups, 8 * S);
  t.kchunks = groups_padded / (8 * S);
  if (vnm) {
    t.blocks_padded = groups_padded;
    t.row_groups_padded = (t.rows_padded + t.v - 1) / t.v;
  }

  // Values (dequantised f32, for zero tests) and raw codes, in the values array's order.
  const codec::ValueLayout layout = codec::value_layout(pk);
  const int64_t n = layout.count(), vpr = groups * 2;
  if (n != pk.rows * vpr)
    fail("tile_compressed: {}: {} values, expected {}", what, n, pk.rows * vpr);
  const std::vector<float> dequant = decode_values_f32(w);
  std::vector<uint8_t> codes(n);
  std::vector<uint8_t> pad(pk.rows, 0);
  const int G = w.codec.group_size;
  std::vector<int64_t> gptr;
  const uint16_t* scales = nullptr;
  const uint8_t* zeros = nullptr;
  if (kind == CodecKind::Codebook4) {
    codes = codec::codebook_codes(w);
    const int64_t books = w.codec.per_channel ? pk.rows : 1;
    const auto book = codec::array_span<uint16_t>(
        codec::expect_array(w, "codebook", DType::F16, static_cast<uint64_t>(books) * 16));
    t.per_tensor_book = !w.codec.per_channel;
    t.books.assign(static_cast<size_t>(t.per_tensor_book ? 32 : t.rows_padded * 32), 0);
    for (int64_t b = 0; b < books; ++b)
      for (int j = 0; j < 16; ++j) {
        const uint16_t e = book[b * 16 + j];
        t.books[b * 32 + j] = static_cast<uint8_t>(e & 0xff);
        t.books[b * 32 + 16 + j] = static_cast<uint8_t>(e >> 8);
      }
    for (int64_t r = 0; r < pk.rows; ++r) {
      const uint16_t* bk = book.data() + (t.per_tensor_book ? 0 : r * 16);
      for (int j = 0; j < 16; ++j)
        if ((bk[j] & 0x7fff) == 0) {
          pad[r] = static_cast<uint8_t>(j);
          break;
        }
    }
  } else {
    if (G != 32 && G != 64 && G != 128)
      fail("tile_compressed: {}: group size {} (32, 64 or 128)", what, G);
    t.scales_per_chunk = 16 * S / G;
    gptr = codec::group_ptr(layout, G);
    const int64_t ngroups = gptr.back();
    scales =
        codec::array_span<uint16_t>(codec::expect_array(w, "scales", DType::F16, ngroups)).data();
    if (!w.codec.symmetric)
      zeros =
          codec::array_span<uint8_t>(codec::expect_array(w, "zeros", DType::U8, ngroups)).data();
    if (kind == CodecKind::Int4) {
      const auto* c8 = reinterpret_cast<const uint8_t*>(
          codec::expect_array(w, "codes", DType::U8, (n + 1) / 2).bytes.data());
      for (int64_t i = 0; i < n; ++i) codes[i] = codec::get_nibble(c8, i);
    } else {
      const auto* c8 = reinterpret_cast<const uint8_t*>(
          codec::expect_array(w, "codes", w.codec.symmetric ? DType::I8 : DType::U8, n)
              .bytes.data());
      for (int64_t i = 0; i < n; ++i)
        codes[i] =
            w.codec.symmetric ? static_cast<uint8_t>(static_cast<int8_t>(c8[i]) + 128) : c8[i];
    }
  }
  // The code of a zero at value position k of row r (padding inside a row's last group).
  auto zero_code = [&](int64_t r, int64_t k) -> uint8_t {
    if (r >= pk.rows) return 0;
    if (kind == CodecKind::Codebook4) return pad[r];
    const int64_t qg = k / G;
    if (qg >= gptr[r + 1] - gptr[r]) return 0;  // no such group: its scale is 0
    if (zeros) return zeros[gptr[r] + qg];
    return kind == CodecKind::Int4 ? 8 : 128;
  };

  // Metadata: fix each group's nibble and its codes.
  const int64_t words_per_row = (groups + 7) / 8;
  const auto meta_in = pk.as<uint32_t>(vnm ? "metadata" : "indices");
  if (static_cast<int64_t>(meta_in.size()) < pk.rows * words_per_row)
    fail("tile_compressed: {}: metadata too short", what);
  std::vector<uint32_t> fixed(static_cast<size_t>(pk.rows * words_per_row));
  for (int64_t r = 0; r < pk.rows; ++r)
    for (int64_t wd = 0; wd < words_per_row; ++wd) {
      const uint32_t in = meta_in[r * words_per_row + wd];
      uint32_t out = 0;
      for (int q = 0; q < 8; ++q) {
        const int64_t gi = wd * 8 + q;
        uint32_t nibble = kPadNibble;
        if (gi < groups) {
          const int64_t i = r * vpr + gi * 2;
          nibble = fix_nibble((in >> (4 * q)) & 0xf, codes[i], codes[i + 1], dequant[i] == 0,
                              dequant[i + 1] == 0, what, r, gi);
        }
        out |= nibble << (4 * q);
      }
      fixed[r * words_per_row + wd] = out;
    }

  // Codes in fragment order.
  t.warps = vnm ? 4 : 8;
  const int64_t row_tiles = t.rows_padded / 16, ksteps = groups_padded / 8;
  const int code_bytes = t.code_words() * 512;
  t.tiles.assign(static_cast<size_t>(row_tiles * t.kchunks * t.slot_bytes()), 0);
  for (int64_t rt = 0; rt < row_tiles; ++rt)
    for (int64_t s = 0; s < ksteps; ++s) {
      const int64_t kc = s / S;
      const int ks = static_cast<int>(s % S);
      uint8_t* slot = t.tiles.data() + t.slot_offset(rt, kc);
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, tt = lane & 3;
        uint32_t wv[2] = {0, 0};
        for (int i = 0; i < 8; ++i) {
          const int64_t row = rt * 16 + g + 8 * ((i >> 1) & 1);
          const int c = 2 * tt + (i & 1) + 8 * (i >> 2);
          const int64_t gi = s * 8 + (c >> 1);
          const int64_t k = gi * 2 + (c & 1);  // value position in the row
          const uint32_t u =
              row < pk.rows && gi < groups ? codes[row * vpr + k] : zero_code(row, k);
          if (t.code == CodeType::Int8) {
            wv[i / 4] |= (u & 0xff) << (8 * (i % 4));
          } else if (t.code == CodeType::Int4) {
            const int r = i >> 1;
            wv[0] |= (u & 0xf) << (4 * (r + 4 * (i & 1)));
          } else {
            const int r = i >> 1, half = (i >> 1) & 1;
            wv[0] |= (u & 0xf) << (4 * (half * 4 + (r >> 1) * 2 + (i & 1)));
          }
        }
        if (t.code == CodeType::Int8)
          std::memcpy(slot + ((ks / 2) * 32 + lane) * 16 + (ks % 2) * 8, wv, 8);
        else
          std::memcpy(slot + ((ks / 4) * 32 + lane) * 16 + (ks % 4) * 4, wv, 4);
      }
    }

  // Metadata words exactly as tiling.cc lays them out.
  auto word = [&](int64_t row, int64_t s) -> uint32_t {
    if (row >= pk.rows || s >= words_per_row) return kPadWord;
    return fixed[row * words_per_row + s];
  };
  for (int64_t rt = 0; rt < row_tiles; ++rt)
    for (int64_t kb = 0; kb < t.kchunks * S / 8; ++kb) {  // 8-step metadata blocks
      uint8_t* out =
          t.tiles.data() + t.slot_offset(rt, kb * 8 / S) + code_bytes + (kb % (S / 8)) * 512;
      for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, tt = lane & 3;
        for (int j = 0; j < 4; ++j) {
          const int64_t s = kb * 8 + 2 * j + (tt >> 1);
          const int half = tt & 1;
          const uint32_t lo = (word(rt * 16 + g, s) >> (16 * half)) & 0xffffu;
          const uint32_t hi = (word(rt * 16 + g + 8, s) >> (16 * half)) & 0xffffu;
          const uint32_t w32 = lo | (hi << 16);
          std::memcpy(out + (lane * 4 + j) * 4, &w32, 4);
        }
      }
    }

  // (offset, scale) per row, chunk and group slot; padding rows and groups a row lacks get
  // scale 0 (offset 0 for padding rows: every code decodes to 0).
  if (t.code != CodeType::Codebook4) {
    const int spc = t.scales_per_chunk;
    const uint16_t base = f16_from_f32(1024.0f);
    for (int64_t r = 0; r < pk.rows; ++r) {
      const int64_t rgroups = gptr[r + 1] - gptr[r];
      for (int64_t kc = 0; kc < t.kchunks; ++kc)
        for (int q = 0; q < spc; ++q) {
          const int64_t qg = kc * spc + q;
          uint32_t pair = base;
          if (qg < rgroups) {
            const int64_t gg = gptr[r] + qg;
            const int zero = zeros ? zeros[gg] : (kind == CodecKind::Int4 ? 8 : 128);
            pair = f16_from_f32(1024.0f + static_cast<float>(zero)) |
                   (static_cast<uint32_t>(scales[gg]) << 16);
          }
          std::memcpy(t.tiles.data() + t.slot_offset(r / 16, kc) + code_bytes + t.meta_bytes() +
                          ((r % 16) * spc + q) * 4,
                      &pair, 4);
        }
    }
  }

  if (vnm) {
    const auto cols_in = pk.as<uint8_t>("columns");
    const int64_t rgroups = (pk.rows + t.v - 1) / t.v;
    if (static_cast<int64_t>(cols_in.size()) < rgroups * groups * 4)
      fail("tile_compressed: {}: columns too short", what);
    t.columns.assign(static_cast<size_t>(t.row_groups_padded * t.blocks_padded), 0x03020100u);
    for (int64_t rb = 0; rb < rgroups; ++rb)
      for (int64_t cb = 0; cb < groups; ++cb) {
        const uint8_t* c = cols_in.data() + (rb * groups + cb) * 4;
        for (int j = 0; j < 4; ++j)
          if (c[j] >= t.m || (j > 0 && c[j] <= c[j - 1]))
            fail(
                "tile_compressed: {}: row group {}, block {}: offsets {} {} {} {} are not "
                "ascending in 0..{}",
                what, rb, cb, c[0], c[1], c[2], c[3], t.m - 1);
        uint32_t packed;
        std::memcpy(&packed, c, 4);
        t.columns[rb * t.blocks_padded + cb] = packed;
      }
  }
  return t;
}

std::vector<float> compressed_tiled_row(const CompressedTiled& t, int64_t row) {
  if (row < 0 || row >= t.rows_padded)
    fail("compressed_tiled_row: row {} outside [0, {})", row, t.rows_padded);
  if (t.bitmap) return bitmap_tiled_row(t, row);
  std::vector<float> dense(t.cols, 0.0f);
  const int64_t rt = row / 16, rr = row % 16, g = rr % 8, hi = rr / 8;
  const int spc = t.scales_per_chunk;
  const int code_bytes = t.code_words() * 512;
  const int S = t.ksteps;
  for (int64_t s = 0; s < t.kchunks * S; ++s) {
    const int64_t kc = s / S;
    const int ks = static_cast<int>(s % S);
    const uint8_t* chunk = t.tiles.data() + t.slot_offset(rt, kc);
    float scale = 0, offset = 0;
    if (spc) {
      uint32_t pair;
      std::memcpy(&pair, chunk + code_bytes + t.meta_bytes() + (rr * spc + ks * spc / S) * 4, 4);
      offset = f32_from_f16(static_cast<uint16_t>(pair & 0xffff));
      scale = f32_from_f16(static_cast<uint16_t>(pair >> 16));
    }
    for (int j = 0; j < 8; ++j) {  // 4-column group (block) 8s + j
      const int sel = static_cast<int>(s % 2), half = j / 4;
      const int lane = static_cast<int>(4 * g + j % 4);
      uint32_t mword;
      std::memcpy(
          &mword,
          chunk + code_bytes + (ks / 8) * 512 + ((4 * g + 2 * sel + half) * 4 + (ks % 8) / 2) * 4,
          4);
      const uint32_t nibble = ((hi ? mword >> 16 : mword & 0xffffu) >> (4 * (j % 4))) & 0xf;
      uint32_t wv[2];
      if (t.code == CodeType::Int8)
        std::memcpy(wv, chunk + ((ks / 2) * 32 + lane) * 16 + (ks % 2) * 8, 8);
      else
        std::memcpy(wv, chunk + ((ks / 4) * 32 + lane) * 16 + (ks % 4) * 4, 4);
      for (int slot = 0; slot < 2; ++slot) {
        const int i = slot + 2 * static_cast<int>(hi) + 4 * (j / 4);  // half index
        float v;
        if (t.code == CodeType::Codebook4) {
          const int r = i >> 1;
          const uint32_t u = (wv[0] >> (4 * (hi * 4 + (r >> 1) * 2 + (i & 1)))) & 0xf;
          const uint8_t* bk = t.books.data() + (t.per_tensor_book ? 0 : row * 32);
          v = f32_from_f16(static_cast<uint16_t>(bk[u] | (bk[16 + u] << 8)));
        } else {
          uint32_t u;
          if (t.code == CodeType::Int8)
            u = (wv[i / 4] >> (8 * (i % 4))) & 0xff;
          else
            u = (wv[0] >> (4 * ((i >> 1) + 4 * (i & 1)))) & 0xf;
          v = f32_from_f16(f16_from_f32((1024.0f + static_cast<float>(u) - offset) * scale));
        }
        const uint32_t idx = (nibble >> (2 * slot)) & 3;
        int64_t col;
        if (t.vnm) {
          const int64_t block = s * 8 + j;
          const uint32_t cols = t.columns[(row / t.v) * t.blocks_padded + block];
          col = block * t.m + ((cols >> (8 * idx)) & 0xff);
        } else {
          col = (s * 8 + j) * 4 + idx;
        }
        if (col < t.cols) dense[col] += v;
      }
    }
  }
  return dense;
}

}  // namespace sparsa::cuda
