// Packed formats: the format table, bit-exact pack/unpack round trips for every format x dtype
// over many random (and ragged) shapes, the documented metadata layouts checked bit by bit,
// exact byte totals, and the errors for bad input.
#include "sparsa/format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "sparsa/error.h"
#include "sparsa/half.h"
#include "sparse_matrices.h"
#include "test_util.h"

namespace sparsa {
namespace {

using test::block_pattern;
using test::nm_pattern;
using test::unstructured_pattern;
using test::vnm_pattern;

constexpr DType kValueDTypes[] = {DType::F32, DType::F16, DType::BF16};

// Expects `body` to throw sparsa::Error whose message contains every one of `parts`.
using test::expect_error;

// A float tensor from explicit values (f32).
Tensor matrix(const std::string& name, int64_t rows, int64_t cols, std::vector<float> values) {
  return Tensor::from_f32(name, DType::F32, {rows, cols}, values);
}

uint32_t nibble(int idx0, int idx1) { return static_cast<uint32_t>(idx0 | idx1 << 2); }

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.bytes().data(), b.bytes().data(), a.nbytes()) == 0);
}

// ---- the table ---------------------------------------------------------------------------------

TEST(FormatTable, OneRowPerFormatWithNamesThatParse) {
  const std::set<std::string> expected = {"dense", "csr", "bsr", "bitmap", "nm", "vnm"};
  std::set<std::string> names;
  ASSERT_EQ(all_formats().size(), 6u);
  for (const auto& row : all_formats()) {
    names.insert(std::string(row.name));
    EXPECT_EQ(&format_traits(row.kind), &row);
    EXPECT_EQ(parse_format(row.name), row.kind);
    EXPECT_EQ(format_name(row.kind), row.name);
    EXPECT_NE(row.pack, nullptr);
    EXPECT_NE(row.unpack, nullptr);
    EXPECT_NE(row.gemm_reference, nullptr);
  }
  EXPECT_EQ(names, expected);
}

TEST(FormatTable, ParseFormatRejectsUnknownNames) {
  expect_error([] { parse_format("coo"); }, {"'coo'", "unknown format", "csr"});
  expect_error([] { parse_format("CSR"); }, {"'CSR'", "unknown format"});
  expect_error([] { parse_format(""); }, {"''", "unknown format"});
}

TEST(FormatTable, DefaultFormatPerPattern) {
  Pattern dense;
  EXPECT_EQ(default_format(dense), FormatKind::Dense);
  EXPECT_EQ(default_format(nm_pattern(2, 4)), FormatKind::NM);
  EXPECT_EQ(default_format(vnm_pattern(64, 8)), FormatKind::VNM);
  EXPECT_EQ(default_format(block_pattern(4, 4)), FormatKind::BSR);
  EXPECT_EQ(default_format(unstructured_pattern(0.5)), FormatKind::CSR);
  Pattern rows;
  rows.kind = PatternKind::Rows;
  Pattern columns;
  columns.kind = PatternKind::Columns;
  EXPECT_EQ(default_format(rows), FormatKind::CSR);
  EXPECT_EQ(default_format(columns), FormatKind::CSR);
}

// ---- round trips -------------------------------------------------------------------------------

std::vector<std::vector<int64_t>> round_trip_shapes(std::mt19937_64& rng) {
  std::vector<std::vector<int64_t>> shapes = {{1, 1},     {1, 37}, {1, 130},  {29, 1},
                                              {2, 3},     {5, 64}, {17, 65},  {33, 7},
                                              {3, 4, 20}, {40},    {64, 128}, {35, 129}};
  for (int i = 0; i < 14; ++i)
    shapes.push_back({int64_t(1 + rng() % 70), int64_t(1 + rng() % 150)});
  return shapes;
}

TEST(FormatRoundTrip, EveryFormatDtypeAndShapeIsBitExact) {
  std::mt19937_64 rng(7);
  int checked = 0;
  for (const auto& row : all_formats())
    for (DType dtype : kValueDTypes)
      for (const auto& shape : round_trip_shapes(rng)) {
        const Pattern pattern = test::random_pattern_for(row.kind, rng);
        const uint64_t seed = rng();
        const Tensor dense =
            test::random_sparse_tensor("layer.weight", dtype, shape, pattern, seed);
        SCOPED_TRACE(fmt::format("format {} dtype {} shape {} pattern {}:{}:{} block {}x{}",
                                 row.name, dtype_name(dtype), shape_string(shape), pattern.v,
                                 pattern.n, pattern.m, pattern.block_rows, pattern.block_cols));
        const auto floats = dense.to_f32();
        ASSERT_GT(std::count_if(floats.begin(), floats.end(), [](float v) { return v != 0.0f; }),
                  0);
        const PackedMatrix packed = pack(dense, row.kind, pattern);
        EXPECT_EQ(packed.format, row.kind);
        EXPECT_EQ(packed.rows, dense.rows());
        EXPECT_EQ(packed.cols, dense.cols());
        EXPECT_EQ(packed.value_dtype, dtype);
        const Tensor back = unpack(packed, "back");
        EXPECT_EQ(back.name(), "back");
        EXPECT_EQ(back.dtype(), dtype);
        EXPECT_EQ(back.shape(), (std::vector<int64_t>{dense.rows(), dense.cols()}));
        EXPECT_TRUE(same_bytes(back, dense));
        ++checked;
      }
  EXPECT_EQ(checked, 6 * 3 * 26);
}

TEST(FormatRoundTrip, PatternWiderThanNeededStillRoundTrips) {
  // A 2:4 matrix packs into every general format too.
  const Tensor dense = test::random_sparse_tensor("w", DType::F16, {12, 36}, nm_pattern(2, 4), 3);
  for (auto kind : {FormatKind::Dense, FormatKind::CSR, FormatKind::Bitmap, FormatKind::NM}) {
    const Pattern pattern = kind == FormatKind::NM ? nm_pattern(2, 4) : unstructured_pattern(0.5);
    EXPECT_TRUE(same_bytes(unpack(pack(dense, kind, pattern)), dense)) << format_name(kind);
  }
  EXPECT_TRUE(same_bytes(unpack(pack(dense, FormatKind::NM, nm_pattern(4, 8))), dense));
  EXPECT_TRUE(same_bytes(unpack(pack(dense, FormatKind::BSR, block_pattern(5, 3))), dense));
}

TEST(FormatRoundTrip, NegativeZeroIsAZeroForSparseFormats) {
  const Tensor dense = matrix("w", 1, 4, {-0.0f, 1.5f, 0.0f, -2.0f});
  const PackedMatrix csr = pack(dense, FormatKind::CSR, unstructured_pattern(0.5));
  EXPECT_EQ(csr.as<float>("values").size(), 2u);
  const auto back = unpack(csr).to_f32();
  EXPECT_FALSE(std::signbit(back[0]));  // -0 unpacks as +0
  EXPECT_EQ(back[1], 1.5f);
  EXPECT_EQ(back[3], -2.0f);
  // dense and bsr store whole blocks, so they keep the sign bit.
  EXPECT_TRUE(same_bytes(unpack(pack(dense, FormatKind::Dense, Pattern{})), dense));
  EXPECT_TRUE(same_bytes(unpack(pack(dense, FormatKind::BSR, block_pattern(1, 4))), dense));
}

// ---- csr ---------------------------------------------------------------------------------------

TEST(CsrFormat, LayoutAndIndexWidth) {
  const Tensor dense = matrix("w", 3, 5,
                              {0, 1, 0, 2, 0,  //
                               0, 0, 0, 0, 0,  //
                               3, 0, 0, 0, 4});
  const PackedMatrix packed = pack(dense, FormatKind::CSR, unstructured_pattern(0.5));
  ASSERT_EQ(packed.arrays.size(), 3u);
  EXPECT_EQ(packed.arrays[0].name, "row_ptr");
  EXPECT_EQ(packed.arrays[1].name, "col_idx");
  EXPECT_EQ(packed.arrays[2].name, "values");
  EXPECT_EQ(packed.array("col_idx").dtype, DType::U16);
  const auto row_ptr = packed.as<int64_t>("row_ptr");
  EXPECT_EQ(std::vector<int64_t>(row_ptr.begin(), row_ptr.end()),
            (std::vector<int64_t>{0, 2, 2, 4}));
  const auto col = packed.as<uint16_t>("col_idx");
  EXPECT_EQ(std::vector<uint16_t>(col.begin(), col.end()), (std::vector<uint16_t>{1, 3, 0, 4}));
  const auto values = packed.as<float>("values");
  EXPECT_EQ(std::vector<float>(values.begin(), values.end()), (std::vector<float>{1, 2, 3, 4}));
}

TEST(CsrFormat, ColumnIndicesWidenPast65536Columns) {
  for (int64_t cols : {65536, 65537, 70000}) {
    std::vector<float> values(2 * cols, 0.0f);
    values[cols - 1] = 0.5f;        // row 0, last column
    values[cols + 12345] = -0.25f;  // row 1
    values[2 * cols - 1] = 1.0f;    // row 1, last column
    const Tensor dense = matrix("big", 2, cols, values);
    const PackedMatrix packed = pack(dense, FormatKind::CSR, unstructured_pattern(0.9));
    EXPECT_EQ(packed.array("col_idx").dtype, cols <= 65536 ? DType::U16 : DType::U32) << cols;
    EXPECT_TRUE(same_bytes(unpack(packed), dense)) << cols;
  }
}

// ---- bitmap ------------------------------------------------------------------------------------

TEST(BitmapFormat, BitJOfWordWIsColumn64wPlusJ) {
  const int64_t cols = 130;  // 3 words per row, the last one ragged
  std::vector<float> values(2 * cols, 0.0f);
  const std::vector<int64_t> row0 = {0, 5, 63, 64, 127, 129}, row1 = {70};
  for (auto c : row0) values[c] = 1.0f + c;
  for (auto c : row1) values[cols + c] = -1.0f - c;
  const PackedMatrix packed =
      pack(matrix("w", 2, cols, values), FormatKind::Bitmap, unstructured_pattern(0.9));
  std::vector<uint64_t> expected(6, 0);
  for (auto c : row0) expected[c / 64] |= uint64_t{1} << (c % 64);
  for (auto c : row1) expected[3 + c / 64] |= uint64_t{1} << (c % 64);
  const auto bits = packed.as<uint64_t>("bitmap");
  EXPECT_EQ(std::vector<uint64_t>(bits.begin(), bits.end()), expected);
  const auto row_ptr = packed.as<int64_t>("row_ptr");
  EXPECT_EQ(std::vector<int64_t>(row_ptr.begin(), row_ptr.end()), (std::vector<int64_t>{0, 6, 7}));
  const auto stored = packed.as<float>("values");
  EXPECT_EQ(stored[3], 65.0f);  // column 64, the first bit of word 1
  EXPECT_EQ(stored[6], -71.0f);
}

// ---- bsr ---------------------------------------------------------------------------------------

TEST(BsrFormat, StoresNonzeroBlocksZeroPaddedAtRaggedEdges) {
  // 3 x 5 in 2 x 2 blocks: block rows {0, 1}, block columns {0, 1, 2}; the last row and column
  // of blocks are ragged.
  const Tensor dense = matrix("w", 3, 5,
                              {1, 2, 0, 0, 0,  //
                               3, 0, 0, 0, 5,  //
                               0, 0, 0, 0, 6});
  const PackedMatrix packed = pack(dense, FormatKind::BSR, block_pattern(2, 2));
  const auto ptr = packed.as<int64_t>("block_row_ptr");
  EXPECT_EQ(std::vector<int64_t>(ptr.begin(), ptr.end()), (std::vector<int64_t>{0, 2, 3}));
  const auto block_col = packed.as<uint32_t>("block_col");
  EXPECT_EQ(std::vector<uint32_t>(block_col.begin(), block_col.end()),
            (std::vector<uint32_t>{0, 2, 2}));
  const auto values = packed.as<float>("values");
  EXPECT_EQ(std::vector<float>(values.begin(), values.end()),
            (std::vector<float>{1, 2, 3, 0,     // block (0, 0)
                                0, 0, 5, 0,     // block (0, 2): column 5 is padding
                                6, 0, 0, 0}));  // block (1, 2): row 3 and column 5 are padding
  EXPECT_TRUE(same_bytes(unpack(packed), dense));
}

TEST(BsrFormat, NeedsABlockShape) {
  const Tensor dense = matrix("layer.w", 2, 2, {1, 0, 0, 1});
  expect_error([&] { pack(dense, FormatKind::BSR, unstructured_pattern(0.5)); },
               {"tensor 'layer.w'", "bsr needs a block shape", "unstructured"});
}

// ---- nm ----------------------------------------------------------------------------------------

TEST(NmFormat, TwoFourMetadataIsTheMmaSpLayout) {
  // Every row keeps one of the six 2:4 pairs per group, cycling, over 40 columns = 10 groups:
  // 2 words per row, the second holding 2 groups. Word w, nibble g%8 = idx0 | idx1 << 2.
  const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  const int64_t rows = 3, cols = 40, groups = 10;
  const auto random = test::random_values(rows * cols, 11);
  std::vector<float> values(rows * cols, 0.0f);
  std::vector<uint32_t> expected_words(rows * 2, 0);
  std::vector<float> expected_values;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const auto& pair = pairs[(r + g) % 6];
      for (int j = 0; j < 2; ++j) {
        const int64_t i = r * cols + g * 4 + pair[j];
        values[i] = random[i];
        expected_values.push_back(random[i]);
      }
      expected_words[r * 2 + g / 8] |= nibble(pair[0], pair[1]) << (4 * (g % 8));
    }
  const PackedMatrix packed =
      pack(matrix("w", rows, cols, values), FormatKind::NM, nm_pattern(2, 4));
  ASSERT_EQ(packed.arrays.size(), 2u);
  EXPECT_EQ(packed.arrays[0].name, "values");
  EXPECT_EQ(packed.arrays[1].name, "indices");
  EXPECT_EQ(packed.array("indices").dtype, DType::U32);
  const auto words = packed.as<uint32_t>("indices");
  EXPECT_EQ(std::vector<uint32_t>(words.begin(), words.end()), expected_words);
  const auto stored = packed.as<float>("values");
  EXPECT_EQ(std::vector<float>(stored.begin(), stored.end()), expected_values);
  // Spelled out for row 0: groups 0..7 take pairs 0..5, 0, 1 -> nibbles 4 8 c 9 d e 4 8, group 0
  // in the lowest nibble.
  EXPECT_EQ(words[0], 0x84ed'9c84u);
}

TEST(NmFormat, ShortGroupsArePaddedAtTheLowestUnusedOffsets) {
  // 2:4 over 17 columns: 5 groups, the last holding only column 16.
  std::vector<float> values(17, 0.0f);
  values[2] = 0.5f;  // group 0: only offset 2     -> offsets {0, 2}, values {0, 0.5}
  //                      group 1: empty              -> offsets {0, 1}, values {0, 0}
  values[8] = -1.0f;  // group 2: only offset 0     -> offsets {0, 1}, values {-1, 0}
  values[15] = 2.0f;  // group 3: only offset 3     -> offsets {0, 3}, values {0, 2}
  values[16] = 3.0f;  // group 4: offset 0 of a 1-wide group -> {0, 1}: offset 1 is past cols
  const PackedMatrix packed = pack(matrix("w", 1, 17, values), FormatKind::NM, nm_pattern(2, 4));
  const auto stored = packed.as<float>("values");
  EXPECT_EQ(std::vector<float>(stored.begin(), stored.end()),
            (std::vector<float>{0, 0.5f, 0, 0, -1, 0, 0, 2, 3, 0}));
  const uint32_t expected = nibble(0, 2) | nibble(0, 1) << 4 | nibble(0, 1) << 8 |
                            nibble(0, 3) << 12 | nibble(0, 1) << 16;
  ASSERT_EQ(packed.as<uint32_t>("indices").size(), 1u);
  EXPECT_EQ(packed.as<uint32_t>("indices")[0], expected);
  for (const float v : stored) EXPECT_FALSE(std::signbit(v) && v == 0.0f);
}

TEST(NmFormat, WiderGroupsUseFourAndEightBitOffsets) {
  // 1:8 -> 4-bit offsets; 2:20 -> 8-bit offsets. One row, offsets LSB first.
  {
    std::vector<float> values(24, 0.0f);
    values[5] = 1.0f;   // group 0, offset 5
    values[8] = 2.0f;   // group 1, offset 0
    values[23] = 3.0f;  // group 2, offset 7
    const PackedMatrix packed = pack(matrix("w", 1, 24, values), FormatKind::NM, nm_pattern(1, 8));
    ASSERT_EQ(packed.as<uint32_t>("indices").size(), 1u);  // 3 values x 4 bits
    EXPECT_EQ(packed.as<uint32_t>("indices")[0], 5u | 0u << 4 | 7u << 8);
  }
  {
    std::vector<float> values(45, 0.0f);  // 3 groups of 20, the last 5 wide
    values[3] = 1.0f;
    values[19] = 2.0f;
    values[20 + 11] = 3.0f;
    values[40 + 4] = 4.0f;
    const PackedMatrix packed = pack(matrix("w", 1, 45, values), FormatKind::NM, nm_pattern(2, 20));
    const auto words = packed.as<uint32_t>("indices");
    ASSERT_EQ(words.size(), 2u);  // 6 values x 8 bits
    EXPECT_EQ(words[0], 3u | 19u << 8 | 0u << 16 | 11u << 24);
    EXPECT_EQ(words[1], 0u | 4u << 8);
    EXPECT_TRUE(same_bytes(unpack(packed), matrix("w", 1, 45, values)));
  }
}

TEST(NmFormat, RejectsAMatrixThatBreaksThePattern) {
  std::vector<float> values(3 * 8, 0.0f);
  values[0] = 1.0f;
  for (int c : {4, 5, 7}) values[2 * 8 + c] = 1.0f;  // row 2, group 1: 3 nonzeros
  values[1 * 8 + 4] = 1.0f;
  const Tensor dense = matrix("layer.3.w", 3, 8, values);
  expect_error([&] { pack(dense, FormatKind::NM, nm_pattern(2, 4)); },
               {"tensor 'layer.3.w'", "row 2", "columns 4..7", "3 nonzeros", "2:4"});
  expect_error([&] { pack(dense, FormatKind::NM, unstructured_pattern(0.5)); },
               {"tensor 'layer.3.w'", "nm needs an N:M pattern"});
  expect_error([&] { pack(dense, FormatKind::NM, nm_pattern(4, 4)); },
               {"tensor 'layer.3.w'", "1 <= N < M <= 32", "4:4"});
}

// ---- vnm ---------------------------------------------------------------------------------------

TEST(VnmFormat, ColumnsValuesAndMetadataOfAHandBuiltMatrix) {
  // 3 x 12 in 2:2:8 (V = 2, M = 8): row blocks {0, 1}, {2} (ragged); column blocks 0..7, 8..11.
  const int64_t cols = 12;
  std::vector<float> values(3 * cols, 0.0f);
  auto set = [&](int64_t r, int64_t c, float v) { values[r * cols + c] = v; };
  set(0, 1, 1.0f), set(0, 6, 2.0f);   // block (0,0) row 0: columns {1, 6}
  set(1, 3, 3.0f), set(1, 6, 4.0f);   // block (0,0) row 1: columns {3, 6}
  set(0, 9, 5.0f);                    // block (0,1) row 0: column 9 (offset 1); row 1 empty
  set(2, 7, 6.0f);                    // block (1,0) row 2: column 7
  set(2, 8, 7.0f), set(2, 11, 8.0f);  // block (1,1) row 2: offsets {0, 3}
  const PackedMatrix packed =
      pack(matrix("w", 3, cols, values), FormatKind::VNM, vnm_pattern(2, 8));
  ASSERT_EQ(packed.arrays.size(), 3u);
  EXPECT_EQ(packed.arrays[0].name, "columns");
  EXPECT_EQ(packed.arrays[1].name, "values");
  EXPECT_EQ(packed.arrays[2].name, "metadata");
  // Union of the block's nonzero columns, completed with the lowest unused offsets, ascending.
  const auto columns = packed.as<uint8_t>("columns");
  EXPECT_EQ(std::vector<uint8_t>(columns.begin(), columns.end()),
            (std::vector<uint8_t>{0, 1, 3, 6,     // (0,0): {1, 3, 6} + 0
                                  0, 1, 2, 3,     // (0,1): {1} + 0, 2, 3
                                  0, 1, 2, 7,     // (1,0): {7} + 0, 1, 2
                                  0, 1, 2, 3}));  // (1,1): {0, 3} + 1, 2
  const auto stored = packed.as<float>("values");
  EXPECT_EQ(std::vector<float>(stored.begin(), stored.end()),
            (std::vector<float>{1, 2, 0, 5,     // row 0: (0,0) idx {1,3}; (0,1) idx {0,1} pad
                                3, 4, 0, 0,     // row 1: (0,0) idx {2,3}; (0,1) empty {0,1}
                                0, 6, 7, 8}));  // row 2: (1,0) idx {0,3} pad; (1,1) idx {0,3}
  const auto meta = packed.as<uint32_t>("metadata");
  EXPECT_EQ(
      std::vector<uint32_t>(meta.begin(), meta.end()),
      (std::vector<uint32_t>{nibble(1, 3) | nibble(0, 1) << 4, nibble(2, 3) | nibble(0, 1) << 4,
                             nibble(0, 3) | nibble(0, 3) << 4}));
  EXPECT_TRUE(same_bytes(unpack(packed), matrix("w", 3, cols, values)));
}

TEST(VnmFormat, NarrowRaggedBlockUsesOffsetsPastTheLastColumn) {
  // 10 columns in 1:2:8 blocks: the second block is 2 columns wide, so its 4 columns are
  // {0, 1, 2, 3} with offsets 2 and 3 (columns 10, 11) past the edge, carrying 0.
  std::vector<float> values(10, 0.0f);
  values[9] = 1.5f;
  values[2] = -1.0f;
  values[4] = 2.0f;
  const PackedMatrix packed = pack(matrix("w", 1, 10, values), FormatKind::VNM, vnm_pattern(1, 8));
  const auto columns = packed.as<uint8_t>("columns");
  EXPECT_EQ(std::vector<uint8_t>(columns.begin(), columns.end()),
            (std::vector<uint8_t>{0, 1, 2, 4, 0, 1, 2, 3}));
  const auto stored = packed.as<float>("values");
  EXPECT_EQ(std::vector<float>(stored.begin(), stored.end()), (std::vector<float>{-1, 2, 0, 1.5f}));
  EXPECT_EQ(packed.as<uint32_t>("metadata")[0], nibble(2, 3) | nibble(0, 1) << 4);
  EXPECT_TRUE(same_bytes(unpack(packed), matrix("w", 1, 10, values)));
}

TEST(VnmFormat, RejectsRowsAndBlocksThatBreakThePattern) {
  // Row 1 of a 4:2:8 matrix holds 3 nonzeros in columns 8..15.
  std::vector<float> values(4 * 16, 0.0f);
  for (int c : {8, 9, 12}) values[1 * 16 + c] = 1.0f;
  expect_error([&] { pack(matrix("blk.w", 4, 16, values), FormatKind::VNM, vnm_pattern(4, 8)); },
               {"tensor 'blk.w'", "row 1", "columns 8..15", "3 nonzeros", "4:2:8"});
  // Rows 0..3 together use 5 distinct columns of block 0, each row only 2.
  std::vector<float> spread(4 * 16, 0.0f);
  spread[0 * 16 + 0] = spread[0 * 16 + 1] = 1.0f;
  spread[1 * 16 + 2] = spread[2 * 16 + 3] = 1.0f;
  spread[3 * 16 + 5] = 1.0f;
  expect_error([&] { pack(matrix("blk.w", 4, 16, spread), FormatKind::VNM, vnm_pattern(4, 8)); },
               {"tensor 'blk.w'", "rows 0..3", "columns 0..7", "5 distinct nonzero columns"});
  // The same matrix is fine with V = 1 (each row on its own).
  EXPECT_TRUE(
      same_bytes(unpack(pack(matrix("blk.w", 4, 16, spread), FormatKind::VNM, vnm_pattern(1, 8))),
                 matrix("blk.w", 4, 16, spread)));
  expect_error([&] { pack(matrix("blk.w", 4, 16, spread), FormatKind::VNM, nm_pattern(2, 4)); },
               {"tensor 'blk.w'", "vnm needs a V:N:M pattern", "2:4"});
}

// ---- sizes -------------------------------------------------------------------------------------

// A 2:4 f16 tensor built directly (fast at 4096 x 4096): row r keeps pair (r + g) % 6 of group g.
Tensor two_four_f16(int64_t rows, int64_t cols) {
  const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
  Tensor t("big.w", DType::F16, {rows, cols});
  auto* bits = reinterpret_cast<uint16_t*>(t.mutable_bytes().data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < cols / 4; ++g)
      for (int j = 0; j < 2; ++j)
        bits[r * cols + g * 4 + pairs[(r + g) % 6][j]] = f16_from_f32(0.25f + (r * 7 + g) % 13);
  return t;
}

TEST(PackedSizes, TwoFourF16Is1125BytesPerWeight) {
  const PackedMatrix nm = pack(two_four_f16(4096, 4096), FormatKind::NM, nm_pattern(2, 4));
  // values: 2 of 4 kept x 2 bytes = 1 B/w; indices: 2 bits per kept value = 1 bit/w = 0.125 B/w.
  EXPECT_EQ(nm.array("values").bytes.size(), 4096u * 2048 * 2);
  EXPECT_EQ(nm.array("indices").bytes.size(), 4096u * 128 * 4);
  EXPECT_EQ(nm.total_bytes(), 4096u * 4096 * 9 / 8);
  EXPECT_DOUBLE_EQ(nm.bytes_per_weight(), 1.125);
}

TEST(PackedSizes, VnmF16At64x2x8) {
  // values: 2 of 8 x 2 bytes = 0.5 B/w; metadata: 4 bits per 8 columns = 0.0625 B/w;
  // columns: 4 bytes per 64 x 8 block = 1/128 B/w. Every row uses block columns {1 or 2, 6}.
  Tensor t("big.w", DType::F16, {4096, 4096});
  auto* bits = reinterpret_cast<uint16_t*>(t.mutable_bytes().data());
  for (int64_t r = 0; r < 4096; ++r)
    for (int64_t b = 0; b < 512; ++b) {
      bits[r * 4096 + b * 8 + 1 + r % 2] = f16_from_f32(1.0f + (r + b) % 5);
      bits[r * 4096 + b * 8 + 6] = f16_from_f32(-1.0f - (r * b) % 3);
    }
  const PackedMatrix vnm = pack(t, FormatKind::VNM, vnm_pattern(64, 8));
  EXPECT_EQ(vnm.array("columns").bytes.size(), 64u * 512 * 4);
  EXPECT_EQ(vnm.array("values").bytes.size(), 4096u * 512 * 2 * 2);
  EXPECT_EQ(vnm.array("metadata").bytes.size(), 4096u * 64 * 4);
  EXPECT_DOUBLE_EQ(vnm.bytes_per_weight(), 0.5 + 0.0625 + 1.0 / 128);
}

TEST(PackedSizes, ExactTotalsFollowTheDocumentedFormulas) {
  std::mt19937_64 rng(5);
  for (DType dtype : kValueDTypes) {
    const int64_t s = dtype_size(dtype);
    const Tensor u =
        test::random_sparse_tensor("u", dtype, {37, 300}, unstructured_pattern(0.7), 9);
    int64_t nnz = 0;
    for (float v : u.to_f32()) nnz += v != 0.0f;
    const int64_t dense_bytes = 37 * 300 * s;
    EXPECT_EQ(pack(u, FormatKind::Dense, Pattern{}).total_bytes(), size_t(dense_bytes));
    EXPECT_DOUBLE_EQ(pack(u, FormatKind::Dense, Pattern{}).bytes_per_weight(), double(s));
    EXPECT_EQ(pack(u, FormatKind::CSR, Pattern{}).total_bytes(), size_t(38 * 8 + nnz * (2 + s)));
    EXPECT_EQ(pack(u, FormatKind::Bitmap, Pattern{}).total_bytes(),
              size_t(38 * 8 + 37 * 5 * 8 + nnz * s));

    const Tensor b = test::random_sparse_tensor("b", dtype, {37, 300}, block_pattern(4, 16), 10);
    const PackedMatrix bsr = pack(b, FormatKind::BSR, block_pattern(4, 16));
    const int64_t blocks = bsr.as<int64_t>("block_row_ptr").back();
    EXPECT_GT(blocks, 0);
    EXPECT_EQ(bsr.total_bytes(), size_t((10 + 1) * 8 + blocks * (4 + 4 * 16 * s)));

    // 3:10 over 37 x 300: 30 groups x 3 values x 4 bits = 360 bits -> 12 words per row.
    const Tensor n = test::random_sparse_tensor("n", dtype, {37, 300}, nm_pattern(3, 10), 11);
    EXPECT_EQ(pack(n, FormatKind::NM, nm_pattern(3, 10)).total_bytes(),
              size_t(37 * 30 * 3 * s + 37 * 12 * 4));
    // 16:2:32 over 37 x 300: 3 row blocks, 10 column blocks, 2 metadata words per row.
    const Tensor v = test::random_sparse_tensor("v", dtype, {37, 300}, vnm_pattern(16, 32), 12);
    EXPECT_EQ(pack(v, FormatKind::VNM, vnm_pattern(16, 32)).total_bytes(),
              size_t(3 * 10 * 4 + 37 * 10 * 2 * s + 37 * 2 * 4));
  }
}

// ---- bad input ---------------------------------------------------------------------------------

TEST(FormatErrors, PackRejectsNonFloatTensors) {
  Tensor ints("ids", DType::I32, {2, 2});
  std::mt19937_64 rng(1);
  for (const auto& row : all_formats())
    expect_error([&] { row.pack(ints, test::random_pattern_for(row.kind, rng)); },
                 {"tensor 'ids'", "dtype I32", std::string(row.name)});
}

TEST(FormatErrors, UnpackRejectsDamagedArrays) {
  const Tensor dense = test::random_sparse_tensor("w", DType::F32, {6, 40}, nm_pattern(2, 4), 1);
  {
    PackedMatrix p = pack(dense, FormatKind::CSR, Pattern{});
    p.array("values").bytes.pop_back();
    expect_error([&] { unpack(p); }, {"packed csr matrix [6, 40]", "'values'", "bytes"});
  }
  {
    PackedMatrix p = pack(dense, FormatKind::CSR, Pattern{});
    p.arrays.erase(p.arrays.begin() + 1);
    expect_error([&] { unpack(p); }, {"packed csr matrix", "no array 'col_idx'"});
  }
  {
    PackedMatrix p = pack(dense, FormatKind::CSR, Pattern{});
    reinterpret_cast<uint16_t*>(p.array("col_idx").bytes.data())[3] = 40;
    expect_error([&] { unpack(p); }, {"packed csr matrix", "col_idx[3] = 40", "past the last"});
  }
  {
    PackedMatrix p = pack(dense, FormatKind::CSR, Pattern{});
    p.array("col_idx").dtype = DType::U32;
    expect_error([&] { unpack(p); }, {"'col_idx'", "dtype U32", "expected U16"});
  }
  {
    PackedMatrix p = pack(dense, FormatKind::Bitmap, Pattern{});
    reinterpret_cast<uint64_t*>(p.array("bitmap").bytes.data())[0] |= uint64_t{1} << 50;
    expect_error([&] { unpack(p); }, {"packed bitmap matrix", "row 0", "past the last column"});
  }
  {
    PackedMatrix p = pack(dense, FormatKind::NM, nm_pattern(2, 4));
    reinterpret_cast<uint32_t*>(p.array("indices").bytes.data())[0] = 0;  // idx0 == idx1
    expect_error([&] { unpack(p); }, {"packed nm matrix", "row 0, group 0", "ascending"});
  }
  {
    PackedMatrix p = pack(dense, FormatKind::BSR, block_pattern(2, 8));
    reinterpret_cast<uint32_t*>(p.array("block_col").bytes.data())[0] = 5;
    expect_error([&] { unpack(p); }, {"packed bsr matrix", "block_col[0] = 5"});
  }
  {
    const Tensor v = test::random_sparse_tensor("w", DType::F32, {6, 40}, vnm_pattern(2, 8), 2);
    PackedMatrix p = pack(v, FormatKind::VNM, vnm_pattern(2, 8));
    reinterpret_cast<uint32_t*>(p.array("metadata").bytes.data())[0] &= ~0xfu;
    expect_error([&] { unpack(p); }, {"packed vnm matrix", "row 0, column block 0", "idx0 < idx1"});
    PackedMatrix q = pack(v, FormatKind::VNM, vnm_pattern(2, 8));
    q.array("columns").bytes[1] = std::byte{9};
    expect_error([&] { unpack(q); }, {"packed vnm matrix", "columns of block 0", "M = 8"});
  }
  {
    PackedMatrix p = pack(dense, FormatKind::Dense, Pattern{});
    p.value_dtype = DType::I8;
    expect_error([&] { unpack(p); }, {"packed dense matrix", "I8"});
  }
}

}  // namespace
}  // namespace sparsa
