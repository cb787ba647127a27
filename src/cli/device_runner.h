// `--device cpu|cuda` for `sparsa run` and `sparsa eval`: one sequence's forward and the
// perplexity loop on the chosen device. CUDA is used only when sparsa was built with it
// (SPARSA_WITH_CUDA); otherwise, or without a GPU, --device cuda is bad input (exit 2).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sparsa/model.h"

namespace sparsa::cli {

enum class Device { Cpu, Cuda };

// "cpu" or "cuda"; anything else throws naming the --device value.
Device parse_device(const std::string& name);
// Throws sparsa::Error when the device cannot run here (CUDA not built, no GPU).
void require_device(Device device);
// The dense weight dtype for --weights: the given name, or the device's default when empty
// (f32 on the CPU, f16 on CUDA). CUDA refuses f32.
DType weight_dtype_for(Device device, const std::string& weights);
// "cpu" or "cuda (NVIDIA H100 80GB HBM3)".
std::string device_description(Device device);

// One sequence with its KV cache on the device.
class Sequence {
 public:
  virtual ~Sequence() = default;
  virtual std::vector<float> forward(std::span<const int32_t> tokens, bool all_logits) = 0;
};
// The model's weights are uploaded here for CUDA; the sequence keeps them. dense_fallback: CUDA
// runs layers whose format has no GPU kernel (csr, bsr, bitmap, N:M other than 2:4) as dense
// f16 instead of refusing them (a note on stderr says how many).
std::unique_ptr<Sequence> make_sequence(const LlamaModel& model, Device device, int64_t capacity,
                                        bool dense_fallback = false);

PerplexityResult device_perplexity(const LlamaModel& model, Device device,
                                   std::span<const int32_t> tokens, int64_t ctx,
                                   int64_t max_windows,
                                   const std::function<void(int64_t, int64_t)>& progress,
                                   bool dense_fallback = false);

}  // namespace sparsa::cli
