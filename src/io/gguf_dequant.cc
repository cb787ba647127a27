// ggml's block types decoded to f32, written from the block layouts in ggml-common.h and the
// reference dequantize_row_* in ggml-quants.c. Scalar on purpose: weights are decoded once at
// load time. Fields are read with memcpy because blocks sit at any byte offset in the file.
#include <cstring>

#include "sparsa/error.h"
#include "sparsa/gguf.h"
#include "sparsa/half.h"

namespace sparsa {
namespace {

constexpr int64_t kQK = 32;    // elements per block of the simple quants
constexpr int64_t kQKK = 256;  // elements per super-block of the k-quants

inline uint16_t u16_at(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline float f16_at(const std::byte* p) { return f32_from_f16(u16_at(p)); }
inline uint8_t u8_at(const std::byte* p) { return std::to_integer<uint8_t>(*p); }

void f32_to_f32(const std::byte* src, float* dst, int64_t n) { std::memcpy(dst, src, n * 4); }

void f64_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double v;
    std::memcpy(&v, src + 8 * i, 8);
    dst[i] = static_cast<float>(v);
  }
}

void f16_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_at(src + 2 * i);
}

void bf16_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_from_bf16(u16_at(src + 2 * i));
}

// block_q4_0 { f16 d; u8 qs[16]; }: x[j] = (lo(qs[j]) - 8) d, x[j+16] = (hi(qs[j]) - 8) d.
void q4_0_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 18, dst += kQK) {
    const float d = f16_at(src);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = u8_at(src + 2 + j);
      dst[j] = float(int(q & 0xF) - 8) * d;
      dst[j + 16] = float(int(q >> 4) - 8) * d;
    }
  }
}

// block_q4_1 { f16 d; f16 m; u8 qs[16]; }: x = q d + m, nibbles as in q4_0.
void q4_1_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 20, dst += kQK) {
    const float d = f16_at(src), m = f16_at(src + 2);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = u8_at(src + 4 + j);
      dst[j] = float(q & 0xF) * d + m;
      dst[j + 16] = float(q >> 4) * d + m;
    }
  }
}

// block_q5_0 { f16 d; u8 qh[4]; u8 qs[16]; }: the 5th bit of element j is bit j of qh (u32 LE).
void q5_0_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 22, dst += kQK) {
    const float d = f16_at(src);
    uint32_t qh;
    std::memcpy(&qh, src + 2, 4);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = u8_at(src + 6 + j);
      const int lo = (q & 0xF) | (((qh >> j) & 1) << 4);
      const int hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
      dst[j] = float(lo - 16) * d;
      dst[j + 16] = float(hi - 16) * d;
    }
  }
}

// block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16]; }: x = q d + m.
void q5_1_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 24, dst += kQK) {
    const float d = f16_at(src), m = f16_at(src + 2);
    uint32_t qh;
    std::memcpy(&qh, src + 4, 4);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = u8_at(src + 8 + j);
      const int lo = (q & 0xF) | (((qh >> j) & 1) << 4);
      const int hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
      dst[j] = float(lo) * d + m;
      dst[j + 16] = float(hi) * d + m;
    }
  }
}

// block_q8_0 { f16 d; i8 qs[32]; }: x = q d.
void q8_0_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 34, dst += kQK) {
    const float d = f16_at(src);
    for (int j = 0; j < 32; ++j) dst[j] = float(static_cast<int8_t>(u8_at(src + 2 + j))) * d;
  }
}

// block_q8_1 { f16 d; f16 s; i8 qs[32]; }: x = q d (s = d * sum(q) is only a dot-product aid).
void q8_1_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK; ++b, src += 36, dst += kQK) {
    const float d = f16_at(src);
    for (int j = 0; j < 32; ++j) dst[j] = float(static_cast<int8_t>(u8_at(src + 4 + j))) * d;
  }
}

// The k-quants' 8 six-bit (scale, min) pairs packed in 12 bytes (ggml's get_scale_min_k4).
inline void scale_min_k4(int j, const std::byte* q, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = u8_at(q + j) & 63;
    min = u8_at(q + j + 4) & 63;
  } else {
    scale = (u8_at(q + j + 4) & 0xF) | ((u8_at(q + j - 4) >> 6) << 4);
    min = (u8_at(q + j + 4) >> 4) | ((u8_at(q + j) >> 6) << 4);
  }
}

// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }: 8 sub-blocks of 32,
// x = d sc q - dmin m; each 32 bytes of qs hold two sub-blocks (low nibbles, then high).
void q4_k_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, src += 144) {
    const float d = f16_at(src), dmin = f16_at(src + 2);
    const std::byte* scales = src + 4;
    const std::byte* q = src + 16;
    for (int j = 0; j < 4; ++j, q += 32) {
      uint8_t sc, m;
      scale_min_k4(2 * j, scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      scale_min_k4(2 * j + 1, scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *dst++ = d1 * float(u8_at(q + l) & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * float(u8_at(q + l) >> 4) - m2;
    }
  }
}

// block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }: q4_K plus a 5th bit,
// bit 2j of qh[l] for sub-block 2j and bit 2j+1 for sub-block 2j+1.
void q5_k_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, src += 176) {
    const float d = f16_at(src), dmin = f16_at(src + 2);
    const std::byte* scales = src + 4;
    const std::byte* qh = src + 16;
    const std::byte* ql = src + 48;
    for (int j = 0; j < 4; ++j, ql += 32) {
      uint8_t sc, m;
      scale_min_k4(2 * j, scales, sc, m);
      const float d1 = d * sc, m1 = dmin * m;
      scale_min_k4(2 * j + 1, scales, sc, m);
      const float d2 = d * sc, m2 = dmin * m;
      const uint8_t u1 = uint8_t(1u << (2 * j)), u2 = uint8_t(2u << (2 * j));
      for (int l = 0; l < 32; ++l)
        *dst++ = d1 * float((u8_at(ql + l) & 0xF) + ((u8_at(qh + l) & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l)
        *dst++ = d2 * float((u8_at(ql + l) >> 4) + ((u8_at(qh + l) & u2) ? 16 : 0)) - m2;
    }
  }
}

// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; }: 6-bit q - 32, one i8 scale per
// 16 elements; each half (128 elements) uses 64 bytes of ql, 32 of qh and 8 scales.
void q6_k_to_f32(const std::byte* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQKK; ++b, src += 210) {
    const float d = f16_at(src + 208);
    const std::byte* ql = src;
    const std::byte* qh = src + 128;
    const std::byte* sc = src + 192;
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, dst += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const uint8_t h = u8_at(qh + l);
        const int q1 = int((u8_at(ql + l) & 0xF) | (((h >> 0) & 3) << 4)) - 32;
        const int q2 = int((u8_at(ql + l + 32) & 0xF) | (((h >> 2) & 3) << 4)) - 32;
        const int q3 = int((u8_at(ql + l) >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const int q4 = int((u8_at(ql + l + 32) >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const auto scale = [&](int k) { return float(static_cast<int8_t>(u8_at(sc + k))); };
        dst[l] = d * scale(is) * float(q1);
        dst[l + 32] = d * scale(is + 2) * float(q2);
        dst[l + 64] = d * scale(is + 4) * float(q3);
        dst[l + 96] = d * scale(is + 6) * float(q4);
      }
    }
  }
}

constexpr GgmlTypeTraits kTypes[] = {
    {GgmlType::F32, "F32", 1, 4, f32_to_f32},
    {GgmlType::F16, "F16", 1, 2, f16_to_f32},
    {GgmlType::Q4_0, "Q4_0", kQK, 18, q4_0_to_f32},
    {GgmlType::Q4_1, "Q4_1", kQK, 20, q4_1_to_f32},
    {GgmlType::Q5_0, "Q5_0", kQK, 22, q5_0_to_f32},
    {GgmlType::Q5_1, "Q5_1", kQK, 24, q5_1_to_f32},
    {GgmlType::Q8_0, "Q8_0", kQK, 34, q8_0_to_f32},
    {GgmlType::Q8_1, "Q8_1", kQK, 36, q8_1_to_f32},
    {GgmlType::Q2_K, "Q2_K", kQKK, 84, nullptr},
    {GgmlType::Q3_K, "Q3_K", kQKK, 110, nullptr},
    {GgmlType::Q4_K, "Q4_K", kQKK, 144, q4_k_to_f32},
    {GgmlType::Q5_K, "Q5_K", kQKK, 176, q5_k_to_f32},
    {GgmlType::Q6_K, "Q6_K", kQKK, 210, q6_k_to_f32},
    {GgmlType::Q8_K, "Q8_K", kQKK, 292, nullptr},
    {GgmlType::I8, "I8", 1, 1, nullptr},
    {GgmlType::I16, "I16", 1, 2, nullptr},
    {GgmlType::I32, "I32", 1, 4, nullptr},
    {GgmlType::I64, "I64", 1, 8, nullptr},
    {GgmlType::F64, "F64", 1, 8, f64_to_f32},
    {GgmlType::BF16, "BF16", 1, 2, bf16_to_f32},
};

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == type) return &t;
  return nullptr;
}

std::vector<float> dequantize(GgmlType type, std::span<const std::byte> data, int64_t count) {
  const GgmlTypeTraits* traits = ggml_type_traits(static_cast<uint32_t>(type));
  if (!traits) fail("dequantize: unknown ggml type {}", static_cast<uint32_t>(type));
  if (!traits->to_f32)
    fail("dequantize: ggml type {} cannot be dequantised by sparsa", traits->name);
  if (count < 0 || count % traits->block_size != 0)
    fail("dequantize: {} elements of {} are not a whole number of {}-element blocks", count,
         traits->name, traits->block_size);
  const uint64_t need = uint64_t(count / traits->block_size) * uint64_t(traits->type_size);
  if (data.size() != need)
    fail("dequantize: {} elements of {} take {} bytes, got {}", count, traits->name, need,
         data.size());
  std::vector<float> out(count);
  if (count) traits->to_f32(data.data(), out.data(), count);
  return out;
}

}  // namespace sparsa
