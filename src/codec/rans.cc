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
#include <algorithm>
#include <atomic>

#include <fmt/format.h>

#include "codec/codec_internal.h"

namespace sparsa::codec {
namespace {

constexpr int kProbBits = 14;
constexpr uint32_t kProbScale = 1u << kProbBits;
constexpr uint32_t kLow = 1u << 23;
constexpr uint32_t kChunkSymbols = 1u << 16;
constexpr int kStates = 4;
constexpr size_t kHeaderBytes = 1 + 1 + 2 + 4 + 8;

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
std::vector<uint32_t> normalise(const std::vector<uint64_t>& counts, uint64_t total) {
  std::vector<uint32_t> freq(counts.size(), 0);
  int64_t sum = 0;
  for (size_t s = 0; s < counts.size(); ++s) {
    if (!counts[s]) continue;
    freq[s] = std::max<uint32_t>(
        1, static_cast<uint32_t>((static_cast<long double>(counts[s]) * kProbScale) / total));
    sum += freq[s];
  }
  while (sum != kProbScale) {
    // Move probability to or from the symbol where it changes the code length least: the
    // largest one (always > 1 while sum > scale, since at most 256 symbols sit at 1).
    size_t largest = 0;
    for (size_t s = 1; s < freq.size(); ++s)
      if (freq[s] > freq[largest]) largest = s;
    if (sum < kProbScale) {
      freq[largest] += kProbScale - sum;
      sum = kProbScale;
    } else {
      const int64_t take = std::min<int64_t>(sum - kProbScale, freq[largest] - 1);
      freq[largest] -= static_cast<uint32_t>(take);
      sum -= take;
    }
  }
  return freq;
}

}  // namespace

std::vector<std::byte> rans_encode(std::span<const uint8_t> symbols, int alphabet) {
  if (alphabet < 1 || alphabet > 256) fail("rANS: alphabet size {} is not in 1..256", alphabet);
  const uint64_t n = symbols.size();
  std::vector<uint64_t> counts(alphabet, 0);
  for (uint8_t s : symbols) {
    if (s >= alphabet) fail("rANS: symbol {} outside an alphabet of {}", s, alphabet);
    ++counts[s];
  }
  std::vector<uint32_t> freq = n ? normalise(counts, n) : std::vector<uint32_t>(alphabet, 0);
  std::vector<uint32_t> start(alphabet, 0);
  for (int s = 1; s < alphabet; ++s) start[s] = start[s - 1] + freq[s - 1];

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

struct RansHeader {
  uint64_t n, chunk_symbols, chunks, table_bytes;
};

// The header and the size of the tables, checked before anything is allocated: a chunk codes
// at most kChunkSymbols symbols (what the encoder writes) in at least 4 x u32 states, so a
// stream of B bytes holds at most kChunkSymbols * B / 20 symbols and a crafted count cannot make
// the decoder (or check_compressed) allocate more than that.
RansHeader read_header(std::span<const std::byte> stream, int64_t count, int alphabet,
                       const std::string& what) {
  if (stream.size() < kHeaderBytes)
    fail("{}: rANS stream of {} bytes is shorter than its {}-byte header", what, stream.size(),
         kHeaderBytes);
  const std::byte* p = stream.data();
  const int version = std::to_integer<int>(p[0]);
  const int prob_bits = std::to_integer<int>(p[1]);
  const int stored_alphabet = static_cast<int>(get_le(p + 2, 2));
  RansHeader h;
  h.chunk_symbols = get_le(p + 4, 4);
  h.n = get_le(p + 8, 8);
  if (version != 1) fail("{}: rANS stream version {} is not supported (1)", what, version);
  if (prob_bits != kProbBits)
    fail("{}: rANS stream has {} probability bits, expected {}", what, prob_bits, kProbBits);
  if (stored_alphabet != alphabet)
    fail("{}: rANS stream has an alphabet of {}, expected {}", what, stored_alphabet, alphabet);
  if (h.chunk_symbols == 0 || h.chunk_symbols > kChunkSymbols)
    fail("{}: rANS chunk size {} is not valid (1..{})", what, h.chunk_symbols, kChunkSymbols);
  if (count < 0 || h.n != static_cast<uint64_t>(count))
    fail("{}: rANS stream holds {} symbols, expected {}", what, h.n, count);
  h.chunks = (h.n + h.chunk_symbols - 1) / h.chunk_symbols;
  h.table_bytes = 2 * uint64_t(alphabet) + 4 * h.chunks;
  const uint64_t available = stream.size() - kHeaderBytes;
  if (h.chunks > available / 20 || available < h.table_bytes + 4 * kStates * h.chunks)
    fail("{}: rANS stream of {} bytes is too short for {} symbols in {} chunks", what,
         stream.size(), h.n, h.chunks);
  return h;
}

}  // namespace

void check_rans_header(std::span<const std::byte> stream, int64_t count, int alphabet,
                       const std::string& what) {
  (void)read_header(stream, count, alphabet, what);
}

std::vector<uint8_t> rans_decode(std::span<const std::byte> stream, int64_t count, int alphabet,
                                 const std::string& what) {
  const RansHeader h = read_header(stream, count, alphabet, what);
  const std::byte* p = stream.data();
  const uint64_t n = h.n, chunk_symbols = h.chunk_symbols, chunks = h.chunks,
                 table_bytes = h.table_bytes;

  std::vector<uint32_t> freq(alphabet), start(alphabet);
  uint64_t sum = 0;
  for (int s = 0; s < alphabet; ++s) {
    freq[s] = static_cast<uint32_t>(get_le(p + kHeaderBytes + 2 * s, 2));
    start[s] = static_cast<uint32_t>(sum);
    sum += freq[s];
  }
  if (n > 0 && sum != kProbScale)
    fail("{}: rANS frequencies sum to {}, expected {}", what, sum, kProbScale);
  std::vector<uint8_t> slot_symbol(kProbScale, 0);
  if (n > 0)
    for (int s = 0; s < alphabet; ++s)
      std::fill_n(slot_symbol.begin() + start[s], freq[s], static_cast<uint8_t>(s));

  std::vector<uint64_t> chunk_offset(chunks + 1);
  chunk_offset[0] = kHeaderBytes + table_bytes;
  for (uint64_t c = 0; c < chunks; ++c)
    chunk_offset[c + 1] = chunk_offset[c] + get_le(p + kHeaderBytes + 2 * alphabet + 4 * c, 4);
  if (chunk_offset[chunks] != stream.size())
    fail("{}: rANS chunks end at byte {}, but the stream has {} bytes", what,
         chunk_offset[chunks], stream.size());

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
  if (bad_chunk >= 0)
    fail("{}: rANS chunk {} (bytes {}..{}) does not decode consistently (corrupted stream)", what,
         bad_chunk.load(), chunk_offset[bad_chunk], chunk_offset[bad_chunk + 1]);
  return out;
}

}  // namespace sparsa::codec
