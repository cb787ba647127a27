// Bitmap matrices (fp16 values; int8 / int4 codes in groups of 32, 64 or 128; codebook4 codes,
// per channel or per tensor) -> the GPU tiling of the bitmap decode kernels
// (CompressedTiled::bitmap in sparsa/cuda_compressed.h), and its host decode.
//
// Each lane owns the 16 positions of its two m16n8k16 A fragments per 32-column step; the kept
// ones are stored in the lane's own run, in (step, position) order, so the kernel expands them
// with one predicated shared-memory load per position and no search. 4-bit codes stay packed
// (two per byte, runs in nibble units). Int codes: a row's value ranks (and so its groups)
// follow its columns. Groups of 128: per row and chunk the pairs of the (at most three) groups
// it touches and the columns where the second and third begin decide every value's pair. Groups
// of 32 / 64 (up to 9 groups per row and chunk): a 32-column step holds at most 32 values, so at
// most two groups; per row and step a u16 gives the index of the first group's pair in the
// slot's pair list and the column where the second begins.
#include <algorithm>
#include <bit>
#include <cstring>
#include <random>

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
  std::vector<int64_t> row_ptr;
  const uint64_t* bits = nullptr;
  std::vector<uint64_t> own_bits;  // random sources (benchmark)
  int64_t words = 0;
  std::vector<int32_t> prefix;  // kept values before each bitmap word, within its row
  bool kept(int64_t r, int64_t c) const {
    return r < rows && c < cols && (bits[r * words + c / 64] >> (c % 64) & 1);
  }
  int64_t rank(int64_t r, int64_t c) const {  // index of (r, c) among row r's kept values
    const uint64_t below = bits[r * words + c / 64] & ((uint64_t{1} << (c % 64)) - 1);
    return prefix[r * words + c / 64] + std::popcount(below);
  }
  void index() {
    prefix.resize(static_cast<size_t>(rows * words));
    row_ptr.assign(static_cast<size_t>(rows + 1), 0);
    for (int64_t r = 0; r < rows; ++r) {
      int32_t n = 0;
      for (int64_t w = 0; w < words; ++w) {
        prefix[r * words + w] = n;
        n += std::popcount(bits[r * words + w]);
      }
      row_ptr[r + 1] = row_ptr[r] + n;
    }
  }
};

Source source_of(const PackedMatrix& pk) {
  Source s;
  s.rows = pk.rows;
  s.cols = pk.cols;
  s.words = (pk.cols + 63) / 64;
  s.bits = pk.as<uint64_t>("bitmap").data();
  s.index();
  return s;
}

int value_bits(CodeType code) {
  return code == CodeType::F16 ? 16 : code == CodeType::Int8 ? 8 : 4;
}

uint32_t no_group_pair() { return f16_from_f32(1024.0f); }  // zero-point 0, scale 0

// value(r, rank) -> fp16 bits or code; pair(r, group) -> (offset, scale) half pair (int codes).
template <typename Value, typename Pair>
CompressedTiled build(const Source& src, CodeType code, int group, Value value, Pair pair) {
  CompressedTiled t;
  t.rows = src.rows;
  t.cols = src.cols;
  t.bitmap = true;
  t.code = code;
  t.warps = kBitmapWarps;
  t.ksteps = 8;
  t.m = 0;
  const bool ints = code == CodeType::Int8 || code == CodeType::Int4;
  const bool step_pairs = ints && group != 128;
  t.scales_per_chunk = step_pairs ? 1 : 0;
  t.rows_padded = round_up(src.rows, kRowTile);
  t.kchunks = (src.cols + kBitmapChunkCols - 1) / kBitmapChunkCols;
  const int bits = value_bits(code);
  const int head = bitmap_head_bytes(code);
  const int64_t groups = t.rows_padded / (16 * kBitmapWarps);
  std::vector<uint8_t> slot;
  std::vector<uint32_t> pairs;
  for (int64_t rg = 0; rg < groups; ++rg)
    for (int64_t kc = 0; kc < t.kchunks; ++kc)
      for (int w = 0; w < kBitmapWarps; ++w) {
        const int64_t rt = rg * kBitmapWarps + w, row0 = rt * 16, col0 = kc * kBitmapChunkCols;
        t.offsets.push_back(static_cast<uint32_t>(t.tiles.size() / 16));
        slot.assign(head, 0);
        int64_t nv = 0;  // values written (nibbles for 4-bit codes)
        uint32_t mask[32][4] = {};
        // Values step-major (session 21): step s's values of lanes 0..31, each lane's in position
        // order, then step s + 1's.
        for (int s = 0; s < 8; ++s)
          for (int lane = 0; lane < 32; ++lane) {
            const int g = lane >> 2, tt = lane & 3;
            for (int i = 0; i < 16; ++i) {
              const int64_t r = row0 + position_row(i, g), c = col0 + 32 * s + position_col(i, tt);
              if (!src.kept(r, c)) continue;
              mask[lane][s / 2] |= 1u << (16 * (s % 2) + i);
              const uint16_t v = value(r, src.rank(r, c));
              if (bits == 4) {
                if (nv % 2 == 0) slot.push_back(0);
                slot.back() |= static_cast<uint8_t>((v & 0xf) << (4 * (nv % 2)));
              } else {
                slot.push_back(static_cast<uint8_t>(v & 0xff));
                if (bits == 16) slot.push_back(static_cast<uint8_t>(v >> 8));
              }
              ++nv;
            }
          }
        for (int lane = 0; lane < 32; ++lane) std::memcpy(slot.data() + lane * 16, mask[lane], 16);
        if (ints && !step_pairs)
          for (int rr = 0; rr < 16; ++rr) {
            const int64_t r = row0 + rr;
            uint32_t words[4] = {0, 0, 0, 256u | 256u << 16};
            if (r < src.rows) {
              int64_t first = -1;  // the row's first group in the chunk
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
        if (step_pairs) {
          // After the values (4-byte aligned): the pair list, each row's touched groups in
          // order, then one spare pair (a step's second pair is read even when unused).
          pairs.clear();
          for (int rr = 0; rr < 16; ++rr) {
            const int64_t r = row0 + rr;
            uint16_t steps[8];
            int64_t first = -1;
            const int64_t base = static_cast<int64_t>(pairs.size());
            for (int s = 0; s < 8; ++s) {
              int64_t ga = -1;
              int next = 32;
              for (int c = 32 * s; c < 32 * s + 32; ++c) {
                if (!src.kept(r, col0 + c)) continue;
                const int64_t gi = src.rank(r, col0 + c) / group;
                if (first < 0) first = gi;
                while (first + static_cast<int64_t>(pairs.size()) - base <= gi)
                  pairs.push_back(pair(r, first + static_cast<int64_t>(pairs.size()) - base));
                if (ga < 0) {
                  ga = gi;
                } else if (gi != ga) {
                  if (gi != ga + 1)
                    fail("tile_bitmap: row {} chunk {} step {}: more than 2 groups", r, kc, s);
                  if (next == 32) next = c - 32 * s;
                }
              }
              const int64_t idx = ga < 0 ? 0 : base + ga - first;
              if (idx >= 1024) fail("tile_bitmap: row {} chunk {}: pair index {}", r, kc, idx);
              steps[s] = static_cast<uint16_t>(idx | next << 10);
            }
            std::memcpy(slot.data() + 512 + rr * 16, steps, 16);
          }
          pairs.push_back(no_group_pair());
          slot.resize(static_cast<size_t>(round_up(static_cast<int64_t>(slot.size()), 4)), 0);
          const size_t at = slot.size();
          slot.resize(at + pairs.size() * 4);
          std::memcpy(slot.data() + at, pairs.data(), pairs.size() * 4);
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

// Codebooks as the bitmap kernels read them: [rows_padded or 1][16 halves].
std::vector<uint8_t> bitmap_books(const uint16_t* book, int64_t books, int64_t rows_padded,
                                  bool per_tensor) {
  std::vector<uint8_t> out(static_cast<size_t>(per_tensor ? 32 : rows_padded * 32), 0);
  std::memcpy(out.data(), book, static_cast<size_t>(books) * 32);
  return out;
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
      src, CodeType::F16, 1, [&](int64_t r, int64_t rank) { return values[src.row_ptr[r] + rank]; },
      [](int64_t, int64_t) { return 0u; });
}

CompressedTiled tile_bitmap_compressed(const CompressedMatrix& w) {
  const PackedMatrix& pk = w.packed;
  const std::string what = codec::describe(w);
  const CodecKind kind = w.codec.kind;
  if (kind != CodecKind::Int8 && kind != CodecKind::Int4 && kind != CodecKind::Codebook4)
    fail(
        "tile_compressed: {}: the bitmap GPU kernels take int8, int4 or codebook4 codes (or f16 "
        "values)",
        what);
  if (pk.rows <= 0 || pk.cols <= 0) fail("tile_compressed: {}: empty matrix", what);
  const Source src = source_of(pk);
  const codec::ValueLayout layout = codec::value_layout(pk);
  const int64_t n = layout.count();
  if (n != src.row_ptr.back())
    fail("tile_compressed: {}: {} values, the bitmap keeps {}", what, n, src.row_ptr.back());
  if (kind == CodecKind::Codebook4) {
    // Raw codes (a `rans` stream is decoded here: the tiling stores raw nibbles).
    const std::vector<uint8_t> codes = codec::codebook_codes(w);
    const int64_t books = w.codec.per_channel ? pk.rows : 1;
    const auto book = codec::array_span<uint16_t>(
        codec::expect_array(w, "codebook", DType::F16, static_cast<uint64_t>(books) * 16));
    CompressedTiled t = build(
        src, CodeType::Codebook4, 1,
        [&](int64_t r, int64_t rank) -> uint16_t { return codes[src.row_ptr[r] + rank] & 0xf; },
        [](int64_t, int64_t) { return 0u; });
    t.per_tensor_book = !w.codec.per_channel;
    t.books = bitmap_books(book.data(), books, t.rows_padded, t.per_tensor_book);
    return t;
  }
  const bool int4 = kind == CodecKind::Int4;
  const int G = w.codec.group_size;
  if (G != 32 && G != 64 && G != 128)
    fail("tile_compressed: {}: group size {} (the bitmap GPU kernels take 32, 64 or 128)", what, G);
  const std::vector<int64_t> gptr = codec::group_ptr(layout, G);
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
  // int4: packed nibbles, the same arithmetic as int8 ((1024 + u - offset) * scale).
  return build(
      src, int4 ? CodeType::Int4 : CodeType::Int8, G,
      [&](int64_t r, int64_t rank) -> uint16_t {
        const int64_t i = src.row_ptr[r] + rank;
        if (int4) return codec::get_nibble(codes, i);  // stored as u + zero-point 8 when sym
        const uint8_t c = codes[i];
        return sym ? static_cast<uint8_t>(static_cast<int8_t>(c) + 128) : c;
      },
      [&](int64_t r, int64_t g) -> uint32_t {
        if (g >= gptr[r + 1] - gptr[r]) return no_group_pair();  // no such group
        const int64_t gg = gptr[r] + g;
        const int zero = zeros ? zeros[gg] : sym_zero;
        return f16_from_f32(1024.0f + static_cast<float>(zero)) |
               (static_cast<uint32_t>(scales[gg]) << 16);
      });
}

CompressedTiled random_bitmap_tiled(int64_t rows, int64_t cols, int percent, CodeType code,
                                    int group, bool symmetric, bool per_tensor_book,
                                    uint64_t seed) {
  Source src;
  src.rows = rows;
  src.cols = cols;
  src.words = (cols + 63) / 64;
  src.own_bits.resize(static_cast<size_t>(rows * src.words));
  std::mt19937_64 rng(seed);
  const uint64_t threshold = static_cast<uint64_t>(percent) * (uint64_t{1} << 32) / 100;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = 0; w < src.words; ++w) {
      uint64_t word = 0;
      if (percent == 50) {
        word = rng();
      } else {
        for (int b = 0; b < 64; ++b) word |= uint64_t{(rng() & 0xffffffffu) < threshold} << b;
      }
      if (w == src.words - 1 && cols % 64) word &= (uint64_t{1} << (cols % 64)) - 1;
      src.own_bits[r * src.words + w] = word;
    }
  src.bits = src.own_bits.data();
  src.index();
  const int qmax = code == CodeType::Int8 ? (symmetric ? 127 : 255) : (symmetric ? 7 : 15);
  std::uniform_real_distribution<float> unit(0.5f, 1.0f), sym(-1.0f, 1.0f);
  auto hash = [seed](uint64_t a) {  // splitmix64: values as a function of their index
    uint64_t z = a + seed * 0x9e3779b97f4a7c15ull + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  std::vector<uint32_t> pairs;  // per group of the rows' value runs
  std::vector<int64_t> gptr(static_cast<size_t>(rows + 1), 0);
  if (code == CodeType::Int8 || code == CodeType::Int4) {
    for (int64_t r = 0; r < rows; ++r)
      gptr[r + 1] = gptr[r] + (src.row_ptr[r + 1] - src.row_ptr[r] + group - 1) / group;
    pairs.resize(static_cast<size_t>(gptr.back()));
    for (auto& pr : pairs) {
      const int zero =
          symmetric ? (code == CodeType::Int8 ? 128 : 8) : static_cast<int>(rng() % (qmax + 1));
      const float scale = unit(rng) / static_cast<float>(symmetric ? qmax : qmax / 2);
      pr = f16_from_f32(1024.0f + static_cast<float>(zero)) |
           (static_cast<uint32_t>(f16_from_f32(scale)) << 16);
    }
  }
  CompressedTiled t = build(
      src, code, group,
      [&](int64_t r, int64_t rank) -> uint16_t {
        const uint64_t h = hash(static_cast<uint64_t>(src.row_ptr[r] + rank));
        if (code == CodeType::F16)
          return f16_from_f32(static_cast<float>(h >> 40) / static_cast<float>(1 << 23) - 1.0f);
        if (code == CodeType::Int8) return static_cast<uint16_t>(h & 0xff);
        return static_cast<uint16_t>(h & 0xf);
      },
      [&](int64_t r, int64_t g) -> uint32_t {
        return g < gptr[r + 1] - gptr[r] ? pairs[gptr[r] + g] : no_group_pair();
      });
  if (code == CodeType::Codebook4) {
    t.per_tensor_book = per_tensor_book;
    const int64_t books = per_tensor_book ? 1 : rows;
    std::vector<uint16_t> book(static_cast<size_t>(books * 16));
    for (int64_t b = 0; b < books; ++b) {
      float e[16];
      for (float& v : e) v = sym(rng);
      std::sort(e, e + 16);
      for (int j = 0; j < 16; ++j) book[b * 16 + j] = f16_from_f32(e[j]);
    }
    t.books = bitmap_books(book.data(), books, t.rows_padded, per_tensor_book);
  }
  return t;
}

std::vector<float> bitmap_tiled_row(const CompressedTiled& t, int64_t row) {
  std::vector<float> dense(t.cols, 0.0f);
  const int64_t rt = row / 16, rg = rt / kBitmapWarps;
  const int w = static_cast<int>(rt % kBitmapWarps), rr = static_cast<int>(row % 16);
  const int head = bitmap_head_bytes(t.code);
  const int bits = value_bits(t.code);
  const bool ints = t.code == CodeType::Int8 || t.code == CodeType::Int4;
  const bool step_pairs = ints && t.scales_per_chunk == 1;
  for (int64_t kc = 0; kc < t.kchunks; ++kc) {
    const int64_t idx = (rg * t.kchunks + kc) * kBitmapWarps + w;
    const uint8_t* slot = t.tiles.data() + int64_t{t.offsets[idx]} * 16;
    uint32_t pairs[4] = {0, 0, 0, 0};
    uint16_t steps[8] = {};
    if (ints) std::memcpy(step_pairs ? static_cast<void*>(steps) : pairs, slot + 512 + rr * 16, 16);
    uint32_t masks[32][4];
    std::memcpy(masks, slot, sizeof masks);
    // Values step-major: where each (step, lane) run starts.
    int64_t start[8][32], total = 0;
    for (int s = 0; s < 8; ++s)
      for (int lane = 0; lane < 32; ++lane) {
        start[s][lane] = total;
        total += std::popcount(masks[lane][s / 2] >> (16 * (s % 2)) & 0xffffu);
      }
    const uint8_t* pair_list = slot + head + round_up((total * bits + 7) / 8, 4);
    for (int lane = 0; lane < 32; ++lane) {
      const uint32_t* mask = masks[lane];
      const int g = lane >> 2, tt = lane & 3;
      for (int s = 0; s < 8; ++s) {
        int64_t p = start[s][lane];
        for (int i = 0; i < 16; ++i) {
          if (!(mask[s / 2] >> (16 * (s % 2) + i) & 1)) continue;
          const int64_t vi = p++;
          if (position_row(i, g) != rr) continue;
          const int c = 32 * s + position_col(i, tt);
          uint32_t u;
          if (bits == 4)
            u = (slot[head + vi / 2] >> (4 * (vi % 2))) & 0xf;
          else if (bits == 8)
            u = slot[head + vi];
          else
            u = slot[head + 2 * vi] | slot[head + 2 * vi + 1] << 8;
          float v;
          if (ints) {
            uint32_t pr;
            if (step_pairs) {
              const uint32_t at = steps[s] & 0x3ff, next = steps[s] >> 10;
              std::memcpy(&pr, pair_list + 4 * (at + (c - 32 * s >= static_cast<int>(next))), 4);
            } else {
              const uint32_t b1 = pairs[3] & 0xffff, b2 = pairs[3] >> 16;
              pr = pairs[(c >= static_cast<int>(b1)) + (c >= static_cast<int>(b2))];
            }
            const float offset = f32_from_f16(static_cast<uint16_t>(pr & 0xffff));
            const float scale = f32_from_f16(static_cast<uint16_t>(pr >> 16));
            v = f32_from_f16(f16_from_f32((1024.0f + static_cast<float>(u) - offset) * scale));
          } else if (t.code == CodeType::Codebook4) {
            const uint8_t* bk = t.books.data() + (t.per_tensor_book ? 0 : row * 32);
            v = f32_from_f16(static_cast<uint16_t>(bk[2 * u] | bk[2 * u + 1] << 8));
          } else {
            v = f32_from_f16(static_cast<uint16_t>(u));
          }
          const int64_t col = kc * kBitmapChunkCols + c;
          if (col < t.cols) dense[col] = v;
        }
      }
    }
  }
  return dense;
}

}  // namespace sparsa::cuda
