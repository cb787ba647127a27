// Compressed patterns of `sparsa bench gemm` (see bench_compressed.h).
#include "cuda/bench_compressed.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "cuda/bench_timing.h"
#include "cuda/compressed_internal.h"
#include "cuda/decode_tuning.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_compressed.h"
#include "sparsa/error.h"
#include "sparsa/half.h"
#include "sparsa/pattern.h"

namespace sparsa::cuda::bench {
namespace {

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

struct Spec {
  Pattern pattern;
  CodecParams codec;
  bool bitmap = false;  // "bitmapPP[+int8]": a bitmap with PP% of the weights kept
  bool f16 = false;     // bitmap without a codec
  int percent = 0;
};

Spec parse_spec(const std::string& name) {
  const size_t plus = name.find('+');
  const std::string pattern = name.substr(0, plus);
  if (pattern.rfind("bitmap", 0) == 0) {
    Spec s;
    s.bitmap = true;
    const std::string pct = pattern.substr(6);
    if (pct.empty() || pct.size() > 2 || pct.find_first_not_of("0123456789") != std::string::npos)
      fail("bench gemm: pattern '{}': expected bitmapPP (PP: percent kept, 1..99)", name);
    s.percent = std::stoi(pct);
    if (s.percent < 1) fail("bench gemm: pattern '{}': percent kept must be 1..99", name);
    s.f16 = plus == std::string::npos;
    if (!s.f16) {
      s.codec = CodecParams::parse(name.substr(plus + 1));
      const CodecKind k = s.codec.kind;
      if (k != CodecKind::Int8 && k != CodecKind::Int4 && k != CodecKind::Codebook4)
        fail("bench gemm: pattern '{}': the bitmap kernels take fp16 values, int8, int4 or "
             "codebook4",
             name);
    }
    return s;
  }
  if (plus == std::string::npos) fail("bench gemm: pattern '{}': expected PATTERN+CODEC", name);
  Spec s{Pattern::parse(pattern), CodecParams::parse(name.substr(plus + 1))};
  const bool nm24 = s.pattern.kind == PatternKind::NM && s.pattern.n == 2 && s.pattern.m == 4;
  const bool vnm = s.pattern.kind == PatternKind::VNM && s.pattern.n == 2 &&
                   (s.pattern.v == 64 || s.pattern.v == 128);
  if (!nm24 && !vnm)
    fail("bench gemm: pattern '{}': the compressed kernels run 2:4 and V:2:M with V = 64 or 128",
         name);
  const CodecKind k = s.codec.kind;
  if (k != CodecKind::Int8 && k != CodecKind::Int4 && k != CodecKind::Codebook4)
    fail("bench gemm: pattern '{}': the compressed kernels take int8, int4 or codebook4", name);
  return s;
}

// A random bitmap tiling: every mask bit kept with probability percent / 100, random fp16
// values in [-1, 1] or int8 codes with random (offset, scale) pairs and group starts.
CompressedTiled random_bitmap(const Spec& s, int64_t n, int64_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  CompressedTiled t;
  t.rows = n;
  t.cols = k;
  t.bitmap = true;
  t.code = s.f16 ? CodeType::F16 : CodeType::Int8;
  t.warps = 4;
  t.ksteps = 8;
  t.rows_padded = round_up(n, kRowTile);
  t.kchunks = (k + 255) / 256;
  const int head = s.f16 ? 512 : 768, vbytes = s.f16 ? 2 : 1;
  const uint64_t threshold = static_cast<uint64_t>(s.percent) * (uint64_t{1} << 32) / 100;
  std::uniform_real_distribution<float> sym(-1.0f, 1.0f), unit(0.5f, 1.0f);
  const int64_t slots = t.rows_padded / 16 * t.kchunks;
  t.tiles.reserve(static_cast<size_t>(slots * (head + 16 * 256 * vbytes * s.percent / 100 + 512)));
  std::vector<uint8_t> slot;
  for (int64_t i = 0; i < slots; ++i) {
    t.offsets.push_back(static_cast<uint32_t>(t.tiles.size() / 16));
    slot.assign(head, 0);
    int64_t kept = 0;
    for (int w = 0; w < 128; ++w) {  // 32 lanes x 4 mask words
      uint32_t word = 0;
      if (s.percent == 50) {
        word = static_cast<uint32_t>(rng());
      } else {
        for (int b = 0; b < 32; ++b) word |= ((rng() & 0xffffffffu) < threshold ? 1u : 0u) << b;
      }
      std::memcpy(slot.data() + w * 4, &word, 4);
      kept += std::popcount(word);
    }
    if (!s.f16)
      for (int r = 0; r < 16; ++r) {
        uint32_t words[4];
        for (int j = 0; j < 3; ++j) {
          const int zero = s.codec.symmetric ? 128 : static_cast<int>(rng() % 256);
          words[j] = f16_from_f32(1024.0f + static_cast<float>(zero)) |
                     (static_cast<uint32_t>(f16_from_f32(unit(rng) / 127.0f)) << 16);
        }
        const uint32_t b1 = static_cast<uint32_t>(rng() % 256);
        words[3] = b1 | (b1 + 128 < 256 ? b1 + 128 : 256u) << 16;
        std::memcpy(slot.data() + 512 + r * 16, words, 16);
      }
    for (int64_t v = 0; v < kept; ++v) {
      if (s.f16) {
        const uint16_t h = f16_from_f32(sym(rng));
        slot.push_back(static_cast<uint8_t>(h & 0xff));
        slot.push_back(static_cast<uint8_t>(h >> 8));
      } else {
        slot.push_back(static_cast<uint8_t>(rng()));
      }
    }
    slot.resize((slot.size() + 15) / 16 * 16, 0);
    t.max_slot_bytes = std::max<int64_t>(t.max_slot_bytes, static_cast<int64_t>(slot.size()));
    t.tiles.insert(t.tiles.end(), slot.begin(), slot.end());
  }
  t.offsets.push_back(static_cast<uint32_t>(t.tiles.size() / 16));
  return t;
}

// Random weights directly in the compressed tiling (any code is valid; metadata nibbles are
// idx0 < idx1 pairs; V:2:M column sets sorted).
CompressedTiled random_tiled(const Spec& s, int64_t n, int64_t k, uint64_t seed) {
  // fp16 and int8 g128 bitmaps: the generator of the earlier runs (random group starts); the
  // combinations of session 5 (codebook4, int4 packed, groups of 32 / 64) through the tiling's
  // own builder on a random bitmap (random_bitmap_tiled).
  if (s.bitmap && (s.f16 || (s.codec.kind == CodecKind::Int8 && s.codec.group_size == 128)))
    return random_bitmap(s, n, k, seed);
  if (s.bitmap) {
    const CodeType code = s.codec.kind == CodecKind::Int8   ? CodeType::Int8
                          : s.codec.kind == CodecKind::Int4 ? CodeType::Int4
                                                            : CodeType::Codebook4;
    return random_bitmap_tiled(n, k, s.percent, code, s.codec.group_size, s.codec.symmetric,
                               !s.codec.per_channel, seed);
  }
  std::mt19937_64 rng(seed);
  CompressedTiled t;
  const bool vnm = s.pattern.kind == PatternKind::VNM;
  t.rows = n;
  t.cols = k;
  t.vnm = vnm;
  t.v = vnm ? s.pattern.v : 0;
  t.m = s.pattern.m;
  t.rows_padded = round_up(n, kRowTile);
  const CodecKind kind = s.codec.kind;
  t.code = kind == CodecKind::Int8   ? CodeType::Int8
           : kind == CodecKind::Int4 ? CodeType::Int4
                                     : CodeType::Codebook4;
  t.ksteps = compressed_chunk_steps(vnm, t.code, n, t.m);
  const int64_t groups_padded = round_up((k + t.m - 1) / t.m, 8 * t.ksteps);
  t.kchunks = groups_padded / (8 * t.ksteps);
  if (vnm) {
    t.blocks_padded = groups_padded;
    t.row_groups_padded = (t.rows_padded + t.v - 1) / t.v;
  }
  t.warps = vnm ? 4 : 8;
  const int qmax =
      kind == CodecKind::Int8 ? (s.codec.symmetric ? 127 : 255) : (s.codec.symmetric ? 7 : 15);
  if (t.code != CodeType::Codebook4) t.scales_per_chunk = 16 * t.ksteps / s.codec.group_size;
  const int64_t slots = t.rows_padded / 16 * t.kchunks;
  t.tiles.resize(slots * t.slot_bytes());
  for (size_t i = 0; i < t.tiles.size(); i += 8) {
    const uint64_t r = rng();
    std::memcpy(t.tiles.data() + i, &r, 8);
  }
  static constexpr uint32_t kPairs[6] = {0x4, 0x8, 0xc, 0x9, 0xd, 0xe};
  std::uniform_real_distribution<float> unit(0.5f, 1.0f), sym(-1.0f, 1.0f);
  const int code_bytes = t.code_words() * 512;
  for (int64_t i = 0; i < slots; ++i) {
    uint8_t* slot = t.tiles.data() + i * t.slot_bytes();
    for (int j = 0; j < t.meta_bytes() / 4; ++j) {  // metadata: valid idx0 < idx1 nibbles
      uint64_t r = rng();
      uint32_t word = 0;
      for (int q = 0; q < 8; ++q, r >>= 6) word |= kPairs[(r & 63) % 6] << (4 * q);
      std::memcpy(slot + code_bytes + j * 4, &word, 4);
    }
    for (int j = 0; j < 16 * t.scales_per_chunk; ++j) {  // (offset, scale) pairs
      const int zero = s.codec.symmetric ? (kind == CodecKind::Int8 ? 128 : 8)
                                         : static_cast<int>(rng() % (qmax + 1));
      const float scale = unit(rng) / static_cast<float>(s.codec.symmetric ? qmax : qmax / 2);
      const uint32_t pair = f16_from_f32(1024.0f + static_cast<float>(zero)) |
                            (static_cast<uint32_t>(f16_from_f32(scale)) << 16);
      std::memcpy(slot + code_bytes + t.meta_bytes() + j * 4, &pair, 4);
    }
  }
  if (t.code == CodeType::Codebook4) {
    t.per_tensor_book = !s.codec.per_channel;
    t.books.resize(t.per_tensor_book ? 32 : t.rows_padded * 32);
    for (size_t b = 0; b < t.books.size() / 32; ++b) {
      float e[16];
      for (float& v : e) v = sym(rng);
      std::sort(e, e + 16);
      for (int j = 0; j < 16; ++j) {
        const uint16_t bits = f16_from_f32(e[j]);
        t.books[b * 32 + j] = static_cast<uint8_t>(bits & 0xff);
        t.books[b * 32 + 16 + j] = static_cast<uint8_t>(bits >> 8);
      }
    }
  }
  if (vnm) {
    t.columns.resize(t.row_groups_padded * t.blocks_padded);
    std::vector<int> perm(t.m);
    for (auto& word : t.columns) {
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::sort(perm.begin(), perm.begin() + 4);
      word = uint32_t(perm[0]) | uint32_t(perm[1]) << 8 | uint32_t(perm[2]) << 16 |
             uint32_t(perm[3]) << 24;
    }
  }
  return t;
}

// Relative Frobenius error of sampled rows (all m tokens) against a double product.
double check_sample(const CompressedTiled& t, int64_t m, const void* x, const void* y,
                    uint64_t seed) {
  const int64_t n = t.rows, k = t.cols;
  std::mt19937_64 rng(seed);
  std::vector<int64_t> rows = {0, n - 1};
  for (int i = 0; i < 30; ++i) rows.push_back(static_cast<int64_t>(rng() % n));
  std::vector<uint16_t> xb(m * k), yb(m * n);
  check_cuda(cudaMemcpy(xb.data(), x, xb.size() * 2, cudaMemcpyDeviceToHost), "download x");
  check_cuda(cudaMemcpy(yb.data(), y, yb.size() * 2, cudaMemcpyDeviceToHost), "download y");
  double diff = 0, norm = 0;
  for (int64_t r : rows) {
    const std::vector<float> w = compressed_tiled_row(t, r);
    for (int64_t tok = 0; tok < m; ++tok) {
      double ref = 0;
      for (int64_t i = 0; i < k; ++i) ref += double(f32_from_f16(xb[tok * k + i])) * w[i];
      const double got = f32_from_f16(yb[tok * n + r]);
      diff += (got - ref) * (got - ref);
      norm += ref * ref;
    }
  }
  return norm > 0 ? std::sqrt(diff / norm) : (diff == 0 ? 0.0 : INFINITY);
}

// SPARSA_COMPRESSED_AB="7,1,7,1": the 2:4 / V:2:M loop variants to time again on every record
// after its default timing, in this order (same process, weights and workspace); for bitmap
// matrices SPARSA_BITMAP_AB="0,1,0,1", the expansions (0 positions, 1 LUT, 2 the default:
// detail::kBitmapPositions / kBitmapLut / kBitmapDefault).
std::vector<int> ab_variants(const char* name) {
  std::vector<int> out;
  const char* env = std::getenv(name);
  if (!env) return out;
  std::string spec = env;
  size_t pos = 0;
  while (pos < spec.size()) {
    const size_t comma = spec.find(',', pos);
    const std::string item =
        spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
      fail("{}: '{}' is not a list of variant numbers", name, spec);
    out.push_back(std::stoi(item));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(std::lround(q * static_cast<double>(v.size() - 1)))];
}

// One call's per-CTA timeline (compressed_decode_timeline; words in compressed_common.cuh):
// summary lines, and the raw words as CSV under `dir`.
void print_timeline(const std::vector<unsigned long long>& tl, double event_us,
                    const std::string& name, int64_t n, int64_t k, int64_t m, int variant,
                    const std::string& dir) {
  constexpr int kW = detail::kTimelineWords;
  const size_t ctas = tl.size() / kW;
  auto w = [&](size_t c, int i) { return tl[c * kW + i]; };
  if (ctas == 0 || w(0, 0) == 0) {
    fmt::print("    timeline {} N={} K={} m={} v{}: no timeline kernel for this case\n", name, n, k,
               m, variant);
    return;
  }
  unsigned long long t0 = ~0ull, t_end = 0;
  double clk = 0, ns = 0;
  std::set<unsigned long long> entries;
  for (size_t c = 0; c < ctas; ++c) {
    t0 = std::min(t0, w(c, 0));
    t_end = std::max(t_end, w(c, 7));
    clk += static_cast<double>(w(c, 15) - w(c, 8));
    ns += static_cast<double>(w(c, 7) - w(c, 0));
    entries.insert(w(c, 0));
  }
  unsigned long long step = ~0ull, prev = 0;
  for (unsigned long long e : entries) {
    if (prev != 0 && e - prev < step) step = e - prev;
    prev = e;
  }
  const double ghz = ns > 0 ? clk / ns : 0;  // SM clock, cycles per ns
  // Stamp s of CTA c in us after the first entry: the CTA's entry by %globaltimer, then its own
  // clock64 (finer than the global timer where that ticks coarsely).
  auto at = [&](size_t c, int s) {
    return (static_cast<double>(w(c, 0) - t0) + static_cast<double>(w(c, 8 + s) - w(c, 8)) / ghz) /
           1e3;
  };
  auto at_global = [&](size_t c, int s) { return static_cast<double>(w(c, s) - t0) / 1e3; };
  fmt::print(
      "    timeline {} N={} K={} m={} v{}: {} CTAs, event {:.1f} us, first entry -> last exit "
      "{:.2f} us (globaltimer), so {:.2f} us of the call outside the CTAs; globaltimer step {} ns, "
      "SM clock {:.3f} GHz\n",
      name, n, k, m, variant, ctas, event_us, static_cast<double>(t_end - t0) / 1e3,
      event_us - static_cast<double>(t_end - t0) / 1e3, step == ~0ull ? 0ull : step, ghz);
  static const char* kNames[8] = {"entry",
                                  "first chunk landed",
                                  "mid flush start",
                                  "mid flush end",
                                  "last chunk landed",
                                  "last MMAs issued",
                                  "last flush done",
                                  "exit"};
  fmt::print("      {:<20} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  (us after the first entry; n)\n",
             "stamp", "min", "p10", "median", "p90", "max", "g.max");
  for (int s = 0; s < 8; ++s) {
    std::vector<double> v, vg;
    for (size_t c = 0; c < ctas; ++c) {
      if ((s == 2 || s == 3) && w(c, 20) == 0) continue;  // no flush before the last unit
      v.push_back(at(c, s));
      vg.push_back(at_global(c, s));
    }
    fmt::print("      {:<20} {:7.2f} {:7.2f} {:7.2f} {:7.2f} {:7.2f} {:7.2f}  {}\n", kNames[s],
               quantile(v, 0), quantile(v, 0.1), quantile(v, 0.5), quantile(v, 0.9), quantile(v, 1),
               quantile(vg, 1), v.size());
  }
  auto dur = [&](const char* what, int a, int b, auto keep) {
    std::vector<double> v;
    for (size_t c = 0; c < ctas; ++c)
      if (keep(c)) v.push_back(at(c, b) - at(c, a));
    if (v.empty()) return;
    fmt::print("      {:<44} median {:6.2f}  p90 {:6.2f}  max {:6.2f}  (n {})\n", what,
               quantile(v, 0.5), quantile(v, 0.9), quantile(v, 1), v.size());
  };
  auto all = [](size_t) { return true; };
  dur("entry -> first chunk landed", 0, 1, all);
  dur("mid flush (start -> end)", 2, 3, [&](size_t c) { return w(c, 20) > 0; });
  dur("first chunk -> last chunk landed", 1, 4, all);
  dur("last chunk: landed -> MMAs issued", 4, 5, all);
  dur("last flush, CTAs that summed a split group", 5, 6,
      [&](size_t c) { return (w(c, 18) & 2) != 0; });
  dur("last flush, CTAs that published partials", 5, 6,
      [&](size_t c) { return (w(c, 18) & 3) == 0; });
  dur("last flush, whole last group", 5, 6, [&](size_t c) { return (w(c, 18) & 1) != 0; });
  dur("last flush done -> all threads done", 6, 7, all);
  std::map<unsigned long long, std::vector<double>> by_units;
  std::vector<double> wait;
  for (size_t c = 0; c < ctas; ++c) {
    by_units[w(c, 17)].push_back(at(c, 5));
    wait.push_back(static_cast<double>(w(c, 19)) / static_cast<double>(w(c, 15) - w(c, 8)));
  }
  std::string units;
  for (const auto& [u, v] : by_units)
    units += fmt::format(" {} units: {} CTAs, median {:.2f} max {:.2f};", u, v.size(),
                         quantile(v, 0.5), quantile(v, 1));
  fmt::print("      last MMAs issued by units per CTA:{}\n", units);
  fmt::print(
      "      fraction of a CTA's time in chunk waits (wait + barrier): median {:.2f} p10 {:.2f} "
      "p90 {:.2f}\n",
      quantile(wait, 0.5), quantile(wait, 0.1), quantile(wait, 0.9));
  if (!dir.empty()) {
    std::string tag = name;
    for (char& ch : tag)
      if (ch == ':' || ch == '+') ch = '_';
    const std::string path = fmt::format("{}/tl-{}-{}x{}-m{}-v{}.csv", dir, tag, n, k, m, variant);
    if (FILE* f = std::fopen(path.c_str(), "w")) {
      std::fprintf(f,
                   "cta,g0,g1,g2,g3,g4,g5,g6,g7,c0,c1,c2,c3,c4,c5,c6,c7,smid,units,flags,wait_"
                   "cycles,mid_flushes\n");
      for (size_t c = 0; c < ctas; ++c) {
        std::fprintf(f, "%zu", c);
        for (int i = 0; i < 21; ++i) std::fprintf(f, ",%llu", w(c, i));
        std::fprintf(f, "\n");
      }
      std::fclose(f);
    }
  }
}

// Session 7: the graph timing of bench_gemm.cc for compressed records. kGraphCalls calls over the
// rotated weight copies (call i: copy i % copies) into one graph, call i writing Y slot
// i % slots (as many of the 20 as 256 MiB hold).
constexpr int kGraphCalls = 20;
struct GraphTimed {
  double us = 0;
  int64_t bad = 0;
};
// `launch(i, q)`: call i with problem q (its own Y slot); compressed_decode on copy i % copies by
// default.
using Launch = std::function<cudaError_t(int, const GemmProblem&)>;
GraphTimed time_graph(const std::vector<DeviceCompressed>& dev, const GemmProblem& p, int64_t n,
                      const std::vector<uint16_t>& want, cudaStream_t stream, int repeats,
                      const Launch& launch = nullptr, double warm_ms = 0) {
  const size_t bytes = static_cast<size_t>(p.m * n * 2);
  const size_t count = std::clamp<size_t>((size_t{256} << 20) / bytes, 1, kGraphCalls);
  std::vector<DeviceBuffer> slots;
  for (size_t i = 0; i < count; ++i) slots.emplace_back(bytes);
  const int copies = static_cast<int>(dev.size());
  CallGraph graph(
      [&](int i) {
        GemmProblem q = p;
        q.y = slots[i % count].data();
        return launch ? launch(i, q) : compressed_decode(dev[i % copies].weights, q, stream);
      },
      kGraphCalls, stream, "compressed decode");
  GraphTimed out;
  out.us = graph.median_us_per_call(2, repeats, warm_ms);
  // One replay into poisoned slots, every output against the direct call.
  for (const DeviceBuffer& s : slots)
    check_cuda(cudaMemsetAsync(s.data(), 0xff, bytes, stream), "poison graph outputs");
  graph.replay();
  check_cuda(cudaStreamSynchronize(stream), "graph replay");
  std::vector<uint16_t> got(want.size());
  for (const DeviceBuffer& s : slots) {
    check_cuda(cudaMemcpy(got.data(), s.data(), bytes, cudaMemcpyDeviceToHost), "download y");
    for (size_t i = 0; i < got.size(); ++i) out.bad += got[i] != want[i];
  }
  return out;
}

}  // namespace

bool is_compressed_pattern(const std::string& name) {
  return name.find('+') != std::string::npos || name.rfind("bitmap", 0) == 0;
}

std::string compressed_pattern_name(const std::string& name) {
  const Spec s = parse_spec(name);
  if (s.bitmap)
    return fmt::format("bitmap{}", s.percent) + (s.f16 ? "" : "+" + s.codec.to_string());
  return s.pattern.to_string() + "+" + s.codec.to_string();
}

std::vector<CompressedTiming> time_compressed(const std::string& name, int64_t n, int64_t k,
                                              const std::vector<int64_t>& ms, const void* x,
                                              void* y, cudaStream_t stream, int warmup, int repeats,
                                              size_t l2_bytes, uint64_t seed, bool sweep_ctas,
                                              double prefill_warm_ms) {
  const Spec spec = parse_spec(name);
  const CompressedTiled tiled = random_tiled(spec, n, k, seed);
  const size_t bytes = tiled.bytes();
  const int copies = static_cast<int>(std::clamp(
      std::ceil(4.0 * static_cast<double>(l2_bytes) / static_cast<double>(bytes)), 2.0, 64.0));
  std::vector<DeviceCompressed> dev;
  for (int c = 0; c < copies; ++c) dev.push_back(upload(tiled));
  size_t ws_bytes = 16;
  const std::vector<int> ab =
      ab_variants(spec.bitmap ? "SPARSA_BITMAP_AB" : "SPARSA_COMPRESSED_AB");
  auto set_variant = [&](int v) {
    if (spec.bitmap)
      detail::set_bitmap_expansion(v);
    else
      detail::set_compressed_variant(v);
  };
  const int default_variant =
      spec.bitmap ? detail::bitmap_expansion() : detail::compressed_variant();
  for (int v : ab) {  // the variants' CTA counts may differ: the workspace fits them all
    set_variant(v);
    for (int64_t m : ms)
      if (m <= kDecodeMaxM)
        ws_bytes = std::max(ws_bytes, compressed_workspace_bytes(dev[0].weights, m));
  }
  set_variant(default_variant);
  for (int64_t m : ms)
    if (m <= kDecodeMaxM)
      ws_bytes = std::max(ws_bytes, compressed_workspace_bytes(dev[0].weights, m));
  const char* tl_env = std::getenv("SPARSA_COMPRESSED_TIMELINE");
  DeviceBuffer ws(ws_bytes);
  check_cuda(cudaMemset(ws.data(), 0, ws.bytes()), "zero workspace");
  // Session 19: 2:4 and V:2:M above 16 tokens run as cuda::gemm runs them (compressed_prefill):
  // a kernel reading the codes (v12 from 512 tokens, the codes prefills below, session 20), or
  // the codes expanded into a transient fp16 copy (expand_nm24 / expand_vnm, one scratch for every
  // weight copy, only as large as some m needs) and the prefill kernels on it; bitmap has no such
  // path.
  const CompressedWeights& w0 = dev[0].weights;
  const bool has_prefill = compressed_expanded_bytes(w0) > 0;
  size_t prefill_ws = 16, scratch_bytes = 16;
  for (int64_t m : ms)
    if (m > kDecodeMaxM && has_prefill) {
      prefill_ws = std::max(prefill_ws, compressed_prefill_workspace_bytes(w0, m));
      scratch_bytes = std::max(scratch_bytes, compressed_prefill_scratch_bytes(w0, m));
    }
  DeviceBuffer scratch(scratch_bytes), pws(prefill_ws);
  check_cuda(cudaMemset(pws.data(), 0, pws.bytes()), "zero prefill workspace");
  // The product of m tokens into y (fp16) with a workspace: the decode and prefill records differ
  // only in theirs.
  auto problem = [&](int64_t m, const DeviceBuffer& workspace) {
    GemmProblem p;
    p.x = x;
    p.m = m;
    p.ldx = k;
    p.y = y;
    p.ldy = n;
    p.y_type = ElemType::F16;
    p.workspace = workspace.data();
    p.workspace_bytes = workspace.bytes();
    return p;
  };
  std::vector<CompressedTiming> out;
  for (int64_t m : ms) {
    if (m > kDecodeMaxM && has_prefill) {
      const GemmProblem p = problem(m, pws);
      const Launch call = [&](int i, const GemmProblem& q) {
        return compressed_prefill(dev[i % copies].weights, q, scratch.data(), scratch.bytes(), stream);
      };
      CompressedTiming r;
      r.m = m;
      check_cuda(cudaMemsetAsync(y, 0xff, m * n * 2, stream), "poison y");
      check_cuda(call(0, p), "compressed prefill");
      check_cuda(cudaStreamSynchronize(stream), "compressed prefill");
      r.rel_err = check_sample(tiled, m, x, y, seed + m);
      std::vector<uint16_t> want(m * n);
      check_cuda(cudaMemcpy(want.data(), y, want.size() * 2, cudaMemcpyDeviceToHost), "download y");
      r.time_us = median_us([&](int i) { return call(i, p); }, warmup, repeats, stream,
                            "compressed prefill", prefill_warm_ms);
      const GraphTimed gt = time_graph(dev, p, n, want, stream, repeats, call, prefill_warm_ms);
      r.graph_time_us = gt.us;
      r.graph_bad = gt.bad;
      r.bytes = static_cast<double>(bytes) + m * k * 2.0 + m * n * 2.0;
      r.prefill = true;
      out.push_back(r);
      continue;
    }
    if (m > kDecodeMaxM) continue;
    GemmProblem p = problem(m, ws);
    // A direct call on copy 0 into a poisoned y: its sampled outputs against the double
    // reference, and its whole Y kept for the graph check and the variants' bit comparison.
    auto direct = [&](double& err) {
      check_cuda(cudaMemsetAsync(y, 0xff, m * n * 2, stream), "poison y");
      check_cuda(compressed_decode(dev[0].weights, p, stream), "compressed decode");
      check_cuda(cudaStreamSynchronize(stream), "compressed decode");
      err = check_sample(tiled, m, x, y, seed + m);
      std::vector<uint16_t> yb(m * n);
      check_cuda(cudaMemcpy(yb.data(), y, yb.size() * 2, cudaMemcpyDeviceToHost), "download y");
      return yb;
    };
    auto per_call = [&] {
      return median_us([&](int i) { return compressed_decode(dev[i % copies].weights, p, stream); },
                       warmup, repeats, stream);
    };
    CompressedTiming r;
    r.m = m;
    const std::vector<uint16_t> want = direct(r.rel_err);
    r.time_us = per_call();
    const GraphTimed gt = time_graph(dev, p, n, want, stream, repeats);
    r.graph_time_us = gt.us;
    r.graph_bad = gt.bad;
    r.bytes = static_cast<double>(bytes) + m * k * 2.0 + m * n * 2.0;
    {  // the same kernels launched without programmatic dependent launch
      const DecodeTuning tuning = decode_tuning();
      DecodeTuning off = tuning;
      off.pdl = false;
      set_decode_tuning(off);
      CompressedTiming::Variant v;
      v.spec = "pdl=0";
      v.same_bits = direct(v.rel_err) == want;
      v.time_us = per_call();
      const GraphTimed g = time_graph(dev, p, n, want, stream, repeats);
      v.graph_time_us = g.us;
      v.graph_bad = g.bad;
      set_decode_tuning(tuning);
      r.ab.push_back(v);
    }
    // Same-run A/B of the 2:4 loop variants (SPARSA_COMPRESSED_AB): each checked like the default
    // (poisoned y, sampled double reference), then timed the same way.
    if (!ab.empty()) {
      std::string line = fmt::format("    AB {} N={} K={} m={}: default(v{}) {:.2f} / graph {:.2f}",
                                     name, n, k, m, default_variant, r.time_us, r.graph_time_us);
      std::set<int> seen;
      for (int v : ab) {
        set_variant(v);
        CompressedTiming::Variant vt;
        vt.spec = fmt::format("variant={}", v);
        vt.same_bits = direct(vt.rel_err) == want;
        const double err = vt.rel_err;
        const double us = per_call();
        vt.time_us = us;
        const GraphTimed g = time_graph(dev, p, n, direct(vt.rel_err), stream, repeats);
        vt.graph_time_us = g.us;
        vt.graph_bad = g.bad;
        r.ab.push_back(vt);
        line +=
            fmt::format(" | v{} {:.2f} / graph {:.2f}{}", v, us, g.us, vt.same_bits ? " =" : " ~");
        if (v == 20 || v == 21) {  // session 8: the pair plan's split groups (compressed_internal.h)
          const detail::PairGroups pg = detail::compressed_pair_groups(dev[0].weights, m, 0);
          line += fmt::format(" [{}: {} CTAs, joins {} single {} pair, counter {} mid {} end]",
                              pg.taken ? "pair plan" : "lean", pg.ctas, pg.single, pg.pair,
                              pg.early, pg.late);
        }
        if (!(err <= 1e-2)) line += fmt::format(" (rel err {:.2e}: WRONG)", err);
        if (g.bad != 0) line += fmt::format(" (graph replay differs in {}: WRONG)", g.bad);
        if (tl_env && seen.insert(v).second && m <= 8) {
          // Timeline of one call: 3 calls, the one with the median event time.
          std::vector<std::pair<float, std::vector<unsigned long long>>> calls;
          for (int t = 0; t < 3; ++t) {
            float ev = 0;
            auto tl = detail::compressed_decode_timeline(dev[(t + 1) % copies].weights, p, stream,
                                                         &ev, &dev[t % copies].weights);
            calls.emplace_back(ev, std::move(tl));
          }
          // the timeline twin's product (last call) against the same reference
          const double tl_err = check_sample(tiled, m, x, y, seed + m);
          if (!(tl_err <= 1e-2)) fmt::print("    timeline v{}: rel err {:.2e}: WRONG\n", v, tl_err);
          std::sort(calls.begin(), calls.end(),
                    [](const auto& a, const auto& b) { return a.first < b.first; });
          print_timeline(calls[1].second, calls[1].first, name, n, k, m, v, tl_env);
        }
      }
      set_variant(default_variant);
      fmt::print("{}\n", line);
    }
    out.push_back(r);
    if (sweep_ctas) {
      int sms = 0;
      check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "SM count");
      std::string line = fmt::format("    {} m={} CTAs:", name, m);
      for (int c : {sms, 2 * sms, 3 * sms, 4 * sms}) {
        GemmProblem q = p;
        q.ctas = c;
        if (compressed_workspace_bytes(dev[0].weights, m, c) > ws.bytes()) continue;
        const double us =
            median_us([&](int i) { return compressed_decode(dev[i % copies].weights, q, stream); },
                      warmup, repeats, stream);
        line += fmt::format(" {}:{:.1f}", c, us);
      }
      fmt::print("{}\n", line);
    }
  }
  return out;
}

}  // namespace sparsa::cuda::bench
