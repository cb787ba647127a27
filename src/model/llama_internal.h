// Shared by the Llama loaders (GGUF, Hugging Face safetensors, llama2.c).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "sparsa/model.h"

namespace sparsa::model {

// A dense linear layer W[rows, cols] from f32 values, stored in `dtype` (f32, f16 or bf16).
Linear make_linear(const std::string& name, std::span<const float> values, int64_t rows,
                   int64_t cols, DType dtype);

// Throws sparsa::Error naming `what` unless perm is a permutation of 0 .. n-1.
void check_permutation(std::span<const int32_t> perm, int64_t n, const std::string& what);

// llama.cpp's converter permutation of Q/K rows (Hugging Face rotate_half order -> adjacent
// pairs): within each head of hd rows, row a*(hd/2) + b moves to row 2b + a.
std::vector<float> permute_rope_rows(std::span<const float> w, int64_t heads, int64_t hd,
                                     int64_t cols);

}  // namespace sparsa::model
