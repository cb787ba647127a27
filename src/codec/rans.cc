// Static-model rANS (byte-wise renormalisation, 32-bit states; after Fabian Giesen's rans_byte)
// for exponent bytes and codebook indices. Hand-written because no Debian package offers a
// plain rANS with a documented stream layout; zstd's Huffman/FSE are not exposed as a library.
//
// Stream layout (little-endian):
//   u8  version (1)          u8  prob_bits (14)       u16 alphabet A (1..256)
//   u32 chunk_symbols C      u64 count n
//   u16 freq[A]              (sum 2^prob_bits; all zero when n = 0)
//   u32 chunk_bytes[ceil(n / C)]
//   chunk data, concatenated. A chunk codes up to C symbols with 4 interleaved states (symbol i
//   uses state i % 4): 4 x u32 initial decoder states, then the renormalisation bytes, read
//   forward. After its last symbol every state is back at 2^23 and every byte is used: the
//   decoder checks both, so a flipped byte is very likely caught.
// Chunks decode independently (in parallel); they also bound the work lost to a bad byte.
//
// Version 2, the GPU-friendly variant (`lossless:gpu`; after DietGPU's layout, written here from
// its description): the same header (version 2, prob_bits 12, C = 4096) and tables, but
//   u32 chunk_words[ceil(n / C)]   (u16 words of each chunk, its states included)
//   chunk data: 32 interleaved states (symbol i of a chunk uses state i % 32: one per warp lane),
//   32 x u32 initial states, then u16 renormalisation words read forward. The decoder runs in
//   rounds of 32 symbols; after decoding, every lane whose state fell below 2^16 reads one word,
//   lanes in ascending order (a warp finds its word with a prefix popcount of the ballot).
//   States live in [2^16, 2^32), so one word always suffices. The end checks are those of
//   version 1: every state back at 2^16, every word used.
// Version 2's decode table (one u32 per slot: symbol | (freq - 1) << 8 | (slot - start) << 20)
// is shared by the CPU decoder here and the CUDA one (src/cuda/rans_decode.cu).
#include <fmt/format.h>

#include <algorithm>
#include <atomic>

#include "codec/codec_internal.h"

namespace sparsa::codec {
namespace {

constexpr int kProbBits = 14;
constexpr uint32_t kProbScale = 1u << kProbBits;
constexpr uint32_t kLow = 1u << 23;
constexpr uint32_t kChunkSymbols = 1u << 16;
constexpr int kStates = 4;
constexpr size_t kHeaderBytes = 1 + 1 + 2 + 4 + 8;
// Version 2 (GPU).
constexpr int kProbBits2 = 12;
constexpr uint32_t kLow2 = 1u << 16;
constexpr uint32_t kChunkSymbols2 = 4096;
constexpr int kStates2 = 32;

void put_u16(std::vector<std::byte>& out, uint16_t v) {
  out.push_back(std::byte(v & 0xff));
  out.push_back(std::byte(v >> 8));
}
void put_u32(std::vector<std::byte>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(std::byte((v >> (8 * i)) & 0xff));
}
void put_u64(std::vector<std::byte>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(std::byte((v >> (8 * i)) & 0xff));
}
uint64_t get_le(const std::byte* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(std::to_integer<uint8_t>(p[i])) << (8 * i);
  return v;
}

// Counts scaled to sum 2^kProbBits, every present symbol at least 1.
std::vector<uint32_t> normalise(const std::vector<uint64_t>& counts, uint64_t total,
                                int prob_bits) {
  const uint32_t scale = 1u << prob_bits;
  std::vector<uint32_t> freq(counts.size(), 0);
  int64_t sum = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    if (!counts[s]) continue;
    freq[s] = std::max<uint32_t>(
        1, static_cast<uint32_t>((static_cast<long double>(counts[s]) * scale) / total));
    sum += freq[s];
  }
  while (sum != scale) {
    // Move probability to or from the symbol where it changes the code length least: the
    // largest one (always > 1 while sum > scale, since at most 256 symbols sit at 1).
    size_t largest = 0;
    for (size_t s = 1; s < freq.size(); ++s)
      if (freq[s] > freq[largest]) largest = s;
    if (sum < scale) {
      freq[largest] += scale - sum;
      sum = scale;
    } else {
      const int64_t take = std::min<int64_t>(sum - scale, freq[largest] - 1);
      freq[largest] -= static_cast<uint32_t>(take);
      sum -= take;
    }
  }
  return freq;
}

// Version 2: one chunk's data (32 u32 states, then u16 words in read order) as bytes.
std::vector<uint8_t> encode_chunk2(std::span<const uint8_t> symbols,
                                   const std::vector<uint32_t>& freq,
                                   const std::vector<uint32_t>& start) {
  const int64_t len = static_cast<int64_t>(symbols.size());
  const int64_t rounds = (len + kStates2 - 1) / kStates2;
  std::vector<uint16_t> words;  // written backwards, reversed at the end
  words.reserve(len / 4 + 16);
  uint32_t state[kStates2];
  std::fill_n(state, kStates2, kLow2);
  // The reverse of the decoder's order: rounds descending, lanes descending.
  for (int64_t r = rounds; r-- > 0;)
    for (int lane = kStates2 - 1; lane >= 0; --lane) {
      const int64_t i = r * kStates2 + lane;
      if (i >= len) continue;
      uint32_t& x = state[lane];
      const uint32_t f = freq[symbols[i]];
      const uint64_t x_max = (uint64_t{kLow2 >> kProbBits2} << 16) * f;
      if (x >= x_max) {  // once is enough: x >> 16 < 2^16 <= x_max
        words.push_back(static_cast<uint16_t>(x & 0xffff));
        x >>= 16;
      }
      x = ((x / f) << kProbBits2) + (x % f) + start[symbols[i]];
    }
  std::vector<uint8_t> out(4 * kStates2 + 2 * words.size());
  for (int k = 0; k < kStates2; ++k)
    for (int j = 0; j < 4; ++j) out[4 * k + j] = static_cast<uint8_t>(state[k] >> (8 * j));
  uint8_t* p = out.data() + 4 * kStates2;
  for (size_t w = words.size(); w-- > 0; p += 2) {
    p[0] = static_cast<uint8_t>(words[w] & 0xff);
    p[1] = static_cast<uint8_t>(words[w] >> 8);
  }
  return out;
}

}  // namespace

std::vector<std::byte> rans_encode(std::span<const uint8_t> symbols, int alphabet, int version) {
  if (alphabet < 1 || alphabet > 256) fail("rANS: alphabet size {} is not in 1..256", alphabet);
  if (version != 1 && version != 2) fail("rANS: stream version {} is not 1 or 2", version);
  const int prob_bits = version == 1 ? kProbBits : kProbBits2;
  const uint64_t chunk_symbols = version == 1 ? kChunkSymbols : kChunkSymbols2;
  const uint64_t n = symbols.size();
  std::vector<uint64_t> counts(alphabet, 0);
  for (uint8_t s : symbols) {
    if (s >= alphabet) fail("rANS: symbol {} outside an alphabet of {}", s, alphabet);
    ++counts[s];
  }
  std::vector<uint32_t> freq =
      n ? normalise(counts, n, prob_bits) : std::vector<uint32_t>(alphabet, 0);
  std::vector<uint32_t> start(alphabet, 0);
  for (int s = 1; s < alphabet; ++s) start[s] = start[s - 1] + freq[s - 1];
  if (version == 2) {
    const uint64_t chunks = (n + chunk_symbols - 1) / chunk_symbols;
    std::vector<std::vector<uint8_t>> chunk_data(chunks);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t c = 0; c < static_cast<int64_t>(chunks); ++c) {
      const uint64_t a = c * chunk_symbols, b = std::min(n, a + chunk_symbols);
      chunk_data[c] = encode_chunk2(symbols.subspan(a, b - a), freq, start);
    }
    std::vector<std::byte> out;
    size_t total = kHeaderBytes + 2 * alphabet + 4 * chunks;
    for (const auto& d : chunk_data) total += d.size();
    out.reserve(total);
    out.push_back(std::byte{2});
    out.push_back(std::byte{kProbBits2});
    put_u16(out, static_cast<uint16_t>(alphabet));
    put_u32(out, static_cast<uint32_t>(chunk_symbols));
    put_u64(out, n);
    for (uint32_t f : freq) put_u16(out, static_cast<uint16_t>(f));
    for (const auto& d : chunk_data) put_u32(out, static_cast<uint32_t>(d.size() / 2));
    for (const auto& d : chunk_data)
      for (uint8_t byte : d) out.push_back(std::byte{byte});
    return out;
  }

  const uint64_t chunks = (n + kChunkSymbols - 1) / kChunkSymbols;
  std::vector<std::vector<uint8_t>> chunk_data(chunks);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < static_cast<int64_t>(chunks); ++c) {
    const uint64_t a = c * uint64_t{kChunkSymbols}, b = std::min(n, a + kChunkSymbols);
    // Worst case 2 bytes per symbol (x shrinks from < 2^31 to < 2^17 * freq), plus the states.
    std::vector<uint8_t> buffer(2 * (b - a) + 4 * kStates);
    uint8_t* ptr = buffer.data() + buffer.size();
    uint32_t state[kStates] = {kLow, kLow, kLow, kLow};
    for (uint64_t i = b; i-- > a;) {
      uint32_t& x = state[(i - a) % kStates];
      const uint32_t f = freq[symbols[i]];
      const uint32_t x_max = ((kLow >> kProbBits) << 8) * f;
      while (x >= x_max) {
        *--ptr = static_cast<uint8_t>(x & 0xff);
        x >>= 8;
      }
      x = ((x / f) << kProbBits) + (x % f) + start[symbols[i]];
    }
    for (int k = kStates - 1; k >= 0; --k) {
      ptr -= 4;
      for (int j = 0; j < 4; ++j) ptr[j] = static_cast<uint8_t>(state[k] >> (8 * j));
    }
    chunk_data[c].assign(ptr, buffer.data() + buffer.size());
  }

  std::vector<std::byte> out;
  out.push_back(std::byte{1});
  out.push_back(std::byte{kProbBits});
  put_u16(out, static_cast<uint16_t>(alphabet));
  put_u32(out, kChunkSymbols);
  put_u64(out, n);
  for (uint32_t f : freq) put_u16(out, static_cast<uint16_t>(f));
  for (const auto& d : chunk_data) put_u32(out, static_cast<uint32_t>(d.size()));
  for (const auto& d : chunk_data)
    for (uint8_t byte : d) out.push_back(std::byte{byte});
  return out;
}

namespace {

// The header and tables of a stream of either version, checked.
struct Parsed {
  int version = 0;
  int prob_bits = 0;
  uint64_t n = 0, chunk_symbols = 0, chunks = 0, table_bytes = 0;
  std::vector<uint32_t> freq, start;
  std::vector<uint64_t> chunk_offset;  // byte offsets in the stream, chunks + 1
};

// The header and the size of the tables, checked before anything is allocated: a chunk codes
// at most kChunkSymbols symbols (what the encoder writes) in at least its u32 size entry and
// its states (20 bytes in version 1, 132 in version 2), so a stream of B bytes holds at most
// kChunkSymbols * B / 20 symbols and a crafted count cannot make the decoder (or
// check_compressed) allocate more than that.
Parsed read_header(std::span<const std::byte> stream, int64_t count, int alphabet,
                   const std::string& what) {
  if (stream.size() < kHeaderBytes)
    fail("{}: rANS stream of {} bytes is shorter than its {}-byte header", what, stream.size(),
         kHeaderBytes);
  const std::byte* p = stream.data();
  Parsed r;
  r.version = std::to_integer<int>(p[0]);
  r.prob_bits = std::to_integer<int>(p[1]);
  const int stored_alphabet = static_cast<int>(get_le(p + 2, 2));
  r.chunk_symbols = get_le(p + 4, 4);
  r.n = get_le(p + 8, 8);
  if (r.version != 1 && r.version != 2)
    fail("{}: rANS stream version {} is not supported (1 or 2)", what, r.version);
  const int expect_bits = r.version == 1 ? kProbBits : kProbBits2;
  if (r.prob_bits != expect_bits)
    fail("{}: rANS stream has {} probability bits, expected {}", what, r.prob_bits, expect_bits);
  if (stored_alphabet != alphabet)
    fail("{}: rANS stream has an alphabet of {}, expected {}", what, stored_alphabet, alphabet);
  if (r.chunk_symbols == 0 || r.chunk_symbols > kChunkSymbols ||
      (r.version == 2 && r.chunk_symbols % kStates2 != 0))
    fail("{}: rANS chunk size {} is not valid (1..{}{})", what, r.chunk_symbols, kChunkSymbols,
         r.version == 2 ? ", a multiple of 32" : "");
  if (count < 0 || r.n != static_cast<uint64_t>(count))
    fail("{}: rANS stream holds {} symbols, expected {}", what, r.n, count);
  r.chunks = (r.n + r.chunk_symbols - 1) / r.chunk_symbols;
  r.table_bytes = 2 * uint64_t(alphabet) + 4 * r.chunks;
  const uint64_t available = stream.size() - kHeaderBytes;
  const uint64_t per_chunk = r.version == 1 ? 4 + 4 * kStates : 4 + 4 * kStates2;
  if (r.chunks > available / per_chunk || available < r.table_bytes + (per_chunk - 4) * r.chunks)
    fail("{}: rANS stream of {} bytes is too short for {} symbols in {} chunks", what,
         stream.size(), r.n, r.chunks);
  return r;
}

Parsed parse_stream(std::span<const std::byte> stream, int64_t count, int alphabet,
                    const std::string& what) {
  Parsed r = read_header(stream, count, alphabet, what);
  const std::byte* p = stream.data();
  r.freq.resize(alphabet);
  r.start.resize(alphabet);
  uint64_t sum = 0;
  for (int s = 0; s < alphabet; ++s) {
    r.freq[s] = static_cast<uint32_t>(get_le(p + kHeaderBytes + 2 * s, 2));
    r.start[s] = static_cast<uint32_t>(sum);
    sum += r.freq[s];
  }
  const uint64_t scale = uint64_t{1} << r.prob_bits;
  if (r.n > 0 && sum != scale)
    fail("{}: rANS frequencies sum to {}, expected {}", what, sum, scale);
  // Version 2 counts u16 words, version 1 bytes.
  const uint64_t unit = r.version == 2 ? 2 : 1;
  r.chunk_offset.resize(r.chunks + 1);
  r.chunk_offset[0] = kHeaderBytes + r.table_bytes;
  for (uint64_t c = 0; c < r.chunks; ++c)
    r.chunk_offset[c + 1] =
        r.chunk_offset[c] + unit * get_le(p + kHeaderBytes + 2 * alphabet + 4 * c, 4);
  if (r.chunk_offset[r.chunks] != stream.size())
    fail("{}: rANS chunks end at byte {}, but the stream has {} bytes", what,
         r.chunk_offset[r.chunks], stream.size());
  return r;
}

[[noreturn]] void fail_chunk(const std::string& what, const Parsed& r, int64_t chunk) {
  fail("{}: rANS chunk {} (bytes {}..{}) does not decode consistently (corrupted stream)", what,
       chunk, r.chunk_offset[chunk], r.chunk_offset[chunk + 1]);
}

std::vector<uint32_t> gpu_table(const Parsed& r) {
  std::vector<uint32_t> table(size_t{1} << r.prob_bits, 0);
  if (r.n > 0)
    for (size_t s = 0; s < r.freq.size(); ++s)
      for (uint32_t j = 0; j < r.freq[s]; ++j)
        table[r.start[s] + j] = static_cast<uint32_t>(s) | ((r.freq[s] - 1) << 8) | (j << 20);
  return table;
}

// Version 2 on the CPU: the twin of the CUDA decoder, lane by lane in the warp's order.
std::vector<uint8_t> decode2(std::span<const std::byte> stream, const Parsed& r,
                             const std::string& what) {
  const std::vector<uint32_t> table = gpu_table(r);
  const uint32_t mask = (1u << r.prob_bits) - 1;
  std::vector<uint8_t> out(r.n);
  std::atomic<int64_t> bad_chunk{-1};
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t c = 0; c < static_cast<int64_t>(r.chunks); ++c) {
    const uint8_t* base = reinterpret_cast<const uint8_t*>(stream.data());
    const uint8_t* ptr = base + r.chunk_offset[c];
    const uint8_t* end = base + r.chunk_offset[c + 1];
    if (end - ptr < 4 * kStates2) {
      bad_chunk = c;
      continue;
    }
    uint32_t state[kStates2];
    for (int k = 0; k < kStates2; ++k, ptr += 4)
      state[k] = static_cast<uint32_t>(get_le(reinterpret_cast<const std::byte*>(ptr), 4));
    const uint64_t a = c * r.chunk_symbols, b = std::min(r.n, a + r.chunk_symbols);
    bool ok = true;
    for (uint64_t i = a; i < b && ok; ++i) {
      uint32_t& x = state[(i - a) % kStates2];
      const uint32_t e = table[x & mask];
      out[i] = static_cast<uint8_t>(e & 0xff);
      x = (((e >> 8) & 0xfff) + 1) * (x >> r.prob_bits) + (e >> 20);
      if (x < kLow2) {
        if (ptr == end) {
          ok = false;
          break;
        }
        x = (x << 16) | ptr[0] | (uint32_t{ptr[1]} << 8);
        ptr += 2;
      }
    }
    for (int k = 0; k < kStates2; ++k) ok = ok && state[k] == kLow2;
    if (!ok || ptr != end) bad_chunk = c;
  }
  if (bad_chunk >= 0) fail_chunk(what, r, bad_chunk.load());
  return out;
}

}  // namespace

void check_rans_header(std::span<const std::byte> stream, int64_t count, int alphabet,
                       const std::string& what) {
  (void)read_header(stream, count, alphabet, what);
}

int rans_stream_version(std::span<const std::byte> stream) {
  return stream.empty() ? 0 : std::to_integer<int>(stream[0]);
}

RansGpuTables rans_gpu_tables(std::span<const std::byte> stream, int64_t count, int alphabet,
                              const std::string& what) {
  const Parsed r = parse_stream(stream, count, alphabet, what);
  if (r.version != 2)
    fail("{}: rANS stream version {} has no GPU decoder (version 2 has: codec 'lossless:gpu')",
         what, r.version);
  RansGpuTables t;
  t.count = static_cast<int64_t>(r.n);
  t.chunk_symbols = static_cast<int>(r.chunk_symbols);
  t.prob_bits = r.prob_bits;
  t.table = gpu_table(r);
  t.data_offset = r.chunk_offset[0];
  t.chunk_word = std::vector<uint64_t>(r.chunks + 1);
  for (uint64_t c = 0; c <= r.chunks; ++c)
    t.chunk_word[c] = (r.chunk_offset[c] - r.chunk_offset[0]) / 2;
  return t;
}

std::vector<uint8_t> rans_decode(std::span<const std::byte> stream, int64_t count, int alphabet,
                                 const std::string& what) {
  const Parsed r = parse_stream(stream, count, alphabet, what);
  if (r.version == 2) return decode2(stream, r, what);
  const std::byte* p = stream.data();
  const uint64_t n = r.n, chunks = r.chunks, chunk_symbols = r.chunk_symbols;
  const std::vector<uint32_t>& freq = r.freq;
  const std::vector<uint32_t>& start = r.start;
  const std::vector<uint64_t>& chunk_offset = r.chunk_offset;
  std::vector<uint8_t> slot_symbol(kProbScale, 0);
  if (n > 0)
    for (int s = 0; s < alphabet; ++s)
      std::fill_n(slot_symbol.begin() + start[s], freq[s], static_cast<uint8_t>(s));

  std::vector<uint8_t> out(n);
  std::atomic<int64_t> bad_chunk{-1};
  constexpr uint32_t mask = kProbScale - 1;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < static_cast<int64_t>(chunks); ++c) {
    const uint8_t* ptr = reinterpret_cast<const uint8_t*>(p) + chunk_offset[c];
    const uint8_t* end = reinterpret_cast<const uint8_t*>(p) + chunk_offset[c + 1];
    if (end - ptr < 4 * kStates) {
      bad_chunk = c;
      continue;
    }
    uint32_t state[kStates];
    for (int k = 0; k < kStates; ++k, ptr += 4)
      state[k] = static_cast<uint32_t>(get_le(reinterpret_cast<const std::byte*>(ptr), 4));
    const uint64_t a = c * chunk_symbols, b = std::min(n, a + chunk_symbols);
    bool ok = true;
    for (uint64_t i = a; i < b && ok; ++i) {
      uint32_t& x = state[(i - a) % kStates];
      const uint32_t slot = x & mask;
      const uint8_t s = slot_symbol[slot];
      out[i] = s;
      x = freq[s] * (x >> kProbBits) + slot - start[s];
      while (x < kLow) {
        if (ptr == end) {
          ok = false;
          break;
        }
        x = (x << 8) | *ptr++;
      }
    }
    for (int k = 0; k < kStates; ++k) ok = ok && state[k] == kLow;
    if (!ok || ptr != end) bad_chunk = c;
  }
  if (bad_chunk >= 0) fail_chunk(what, r, bad_chunk.load());
  return out;
}

}  // namespace sparsa::codec
