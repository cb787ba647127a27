#include <cmath>

#include <gtest/gtest.h>

#include "sparsa/error.h"
#include "sparsa/half.h"
#include "sparsa/tensor.h"
#include "test_util.h"

namespace sparsa {
namespace {

TEST(Half, F16RoundTripsEveryFiniteValue) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    if ((h & 0x7c00) == 0x7c00) continue;  // inf/nan
    EXPECT_EQ(f16_from_f32(f32_from_f16(h)), h) << "bits " << bits;
  }
}

TEST(Half, F16KnownValuesAndRounding) {
  EXPECT_EQ(f16_from_f32(1.0f), 0x3c00);
  EXPECT_EQ(f16_from_f32(-2.0f), 0xc000);
  EXPECT_EQ(f16_from_f32(65504.0f), 0x7bff);
  EXPECT_EQ(f16_from_f32(1e6f), 0x7c00);                 // overflow to inf
  EXPECT_EQ(f16_from_f32(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f16_from_f32(1.0f + 1.0f / 2048), 0x3c00);    // tie rounds to even
  EXPECT_EQ(f16_from_f32(1.0f + 3.0f / 2048), 0x3c02);    // tie rounds to even (up)
  EXPECT_TRUE(std::isnan(f32_from_f16(f16_from_f32(NAN))));
}

TEST(Half, BF16RoundTripsAndRounds) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint16_t b = static_cast<uint16_t>(bits);
    if ((b & 0x7f80) == 0x7f80) continue;
    EXPECT_EQ(bf16_from_f32(f32_from_bf16(b)), b);
  }
  EXPECT_EQ(bf16_from_f32(1.0f), 0x3f80);
  EXPECT_EQ(bf16_from_f32(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie to even
  EXPECT_EQ(bf16_from_f32(std::bit_cast<float>(0x3f818000u)), 0x3f82);
}

TEST(Tensor, ShapeAndMatrixView) {
  Tensor t("w", DType::F16, {3, 4, 5});
  EXPECT_EQ(t.numel(), 60);
  EXPECT_EQ(t.nbytes(), 120u);
  EXPECT_EQ(t.rows(), 12);
  EXPECT_EQ(t.cols(), 5);
  EXPECT_EQ(shape_string(t.shape()), "[3, 4, 5]");
}

TEST(Tensor, F32ConversionsRoundTrip) {
  const auto values = test::random_values(257, 7);
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    auto t = Tensor::from_f32("w", dtype, {257}, values);
    const auto back = t.to_f32();
    const double tolerance = dtype == DType::F32 ? 0 : dtype == DType::F16 ? 1e-3 : 8e-3;
    EXPECT_LE(test::relative_error(back, values), tolerance) << dtype_name(dtype);
  }
}

TEST(Tensor, DTypeNamesRoundTrip) {
  for (auto name : {"F32", "F16", "BF16", "I8", "U8", "I32", "I64", "BOOL", "F64"}) {
    auto dtype = dtype_from_name(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_EQ(dtype_name(*dtype), name);
  }
  EXPECT_FALSE(dtype_from_name("F8_XYZ").has_value());
}

TEST(Tensor, NonFloatDTypeRefusesF32View) {
  Tensor t("ids", DType::I32, {4});
  EXPECT_THROW(t.to_f32(), Error);
}

TEST(Tensor, ViewIsCopiedBeforeWriting) {
  auto storage = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3});
  auto view = Tensor::view("v", DType::F32, {3}, storage,
                           reinterpret_cast<const std::byte*>(storage->data()));
  view.assign_f32(std::vector<float>{4, 5, 6});
  EXPECT_EQ((*storage)[0], 1.0f);
  EXPECT_EQ(view.to_f32()[0], 4.0f);
}

}  // namespace
}  // namespace sparsa
