#include "cli/device_runner.h"

#include <fmt/format.h>

#include "cli/model_source.h"
#include "sparsa/error.h"

#ifdef SPARSA_WITH_CUDA
#include <cuda_runtime_api.h>

#include "sparsa/cuda_model.h"
#endif

namespace sparsa::cli {
namespace {

class CpuSequence final : public Sequence {
 public:
  CpuSequence(const LlamaModel& model, int64_t capacity)
      : model_(model), state_(model.config(), capacity) {}
  std::vector<float> forward(std::span<const int32_t> tokens, bool all_logits) override {
    return model_.forward(state_, tokens, all_logits);
  }

 private:
  const LlamaModel& model_;
  LlamaState state_;
};

#ifdef SPARSA_WITH_CUDA
class CudaSequence final : public Sequence {
 public:
  CudaSequence(const LlamaModel& model, int64_t capacity, bool dense_fallback)
      : model_(model, dense_fallback ? cuda::Fallback::Dense : cuda::Fallback::Error),
        state_(model_, capacity) {
    note_fallback(model_);
  }
  std::vector<float> forward(std::span<const int32_t> tokens, bool all_logits) override {
    return model_.forward(state_, tokens, all_logits);
  }
  static void note_fallback(const cuda::CudaLlama& model) {
    if (model.densified_layers() > 0)
      fmt::print(stderr,
                 "note: {} linear layers have no GPU kernel for their format and run dense "
                 "(--dense-fallback)\n",
                 model.densified_layers());
  }

 private:
  cuda::CudaLlama model_;
  cuda::CudaLlamaState state_;
};
#endif

}  // namespace

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  fail("--device '{}': expected cpu or cuda", name);
}

void require_device(Device device) {
  if (device == Device::Cpu) return;
#ifdef SPARSA_WITH_CUDA
  if (cuda::device_count() == 0)
    fail(
        "--device cuda: no CUDA GPU is available on this machine (cudaGetDeviceCount found "
        "none)");
#else
  fail(
      "--device cuda: this sparsa was built without CUDA (configure with -DSPARSA_CUDA=ON on a "
      "machine with nvcc)");
#endif
}

DType weight_dtype_for(Device device, const std::string& weights) {
  if (weights.empty()) return device == Device::Cuda ? DType::F16 : DType::F32;
  const DType dtype = parse_weight_dtype(weights);
  if (device == Device::Cuda && dtype == DType::F32)
    fail("--weights f32 --device cuda: the GPU kernels take f16 or bf16 weights");
  return dtype;
}

std::string device_description(Device device) {
  if (device == Device::Cpu) return "cpu";
#ifdef SPARSA_WITH_CUDA
  int id = 0;
  cudaDeviceProp props{};
  if (cudaGetDevice(&id) == cudaSuccess && cudaGetDeviceProperties(&props, id) == cudaSuccess)
    return std::string("cuda (") + props.name + ")";
#endif
  return "cuda";
}

std::unique_ptr<Sequence> make_sequence(const LlamaModel& model, Device device, int64_t capacity,
                                        bool dense_fallback) {
  require_device(device);
#ifdef SPARSA_WITH_CUDA
  if (device == Device::Cuda)
    return std::make_unique<CudaSequence>(model, capacity, dense_fallback);
#endif
  return std::make_unique<CpuSequence>(model, capacity);
}

PerplexityResult device_perplexity(const LlamaModel& model, Device device,
                                   std::span<const int32_t> tokens, int64_t ctx,
                                   int64_t max_windows,
                                   const std::function<void(int64_t, int64_t)>& progress,
                                   bool dense_fallback) {
  require_device(device);
#ifdef SPARSA_WITH_CUDA
  if (device == Device::Cuda) {
    cuda::CudaLlama gpu(model, dense_fallback ? cuda::Fallback::Dense : cuda::Fallback::Error);
    CudaSequence::note_fallback(gpu);
    return cuda::perplexity(gpu, tokens, ctx, max_windows, progress);
  }
#endif
  return perplexity(model, tokens, ctx, max_windows, progress);
}

}  // namespace sparsa::cli
