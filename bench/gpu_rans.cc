// GPU entropy decode benchmark (`lossless:gpu`, sparsa/cuda_rans.h):
//   gpu_rans [--shapes 4096x4096,14336x4096] [--repeats 50] [--sigma 0.02] [--out FILE.json]
// Per shape: bf16 weights drawn on the host (Gaussian, per-row std sigma * U[0.5, 1.5], the
// exponent statistics of trained weights), encoded by the CPU encoder, decoded on the device and
// checked bit for bit against the original. Times (CUDA events, median of the timed launches,
// weight copies rotated so their total exceeds 4x L2):
//   decode        exponents + raw bits -> bf16 values; GB/s of decoded output
//   copy          cudaMemcpy device-to-device of the same output size (GB/s of output)
//   cublas_bf16   cuBLAS GEMV, W and x bf16, y fp32 (the dense product the fused one replaces)
//   cublas_f16    cuBLAS GEMV, fp16 in and out (the GEMM benchmark's dense baseline)
//   fused         lossless_gemv: decode and multiply in one pass, no decoded copy
//   two_pass      lossless_decode into a scratch buffer, then cuBLAS bf16
#include <cublas_v2.h>
#include <fmt/format.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cuda/bench_timing.h"
#include "sparsa/codec.h"
#include "sparsa/cuda_rans.h"
#include "sparsa/error.h"
#include "sparsa/format.h"
#include "sparsa/half.h"

using namespace sparsa;
using namespace sparsa::cuda;

namespace {

Tensor realistic_bf16(int64_t rows, int64_t cols, double sigma, uint64_t seed) {
  std::vector<float> v(rows * cols);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    std::mt19937_64 rng(seed * 1000003 + r);
    std::uniform_real_distribution<double> u(0.5, 1.5);
    std::normal_distribution<float> normal(0.0f, static_cast<float>(sigma * u(rng)));
    for (int64_t k = 0; k < cols; ++k) v[r * cols + k] = normal(rng);
  }
  return Tensor::from_f32("w", DType::BF16, {rows, cols}, v);
}

cudaError_t cublas_gemv(cublasHandle_t h, const void* w, cudaDataType wt, const void* x, void* y,
                        cudaDataType yt, int64_t rows, int64_t cols) {
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), 1, int(cols),
                                        &alpha, w, wt, int(cols), x, wt, int(cols), &beta, y, yt,
                                        int(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return s == CUBLAS_STATUS_SUCCESS ? cudaGetLastError() : cudaErrorUnknown;
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

int run(const std::vector<std::string>& shapes, int repeats, double sigma,
        const std::string& out_path) {
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreate(&stream), "stream");
  cublasHandle_t cublas = nullptr;
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS) fail("cublasCreate failed");
  cublasSetStream(cublas, stream);
  cudaDeviceProp props{};
  check_cuda(cudaGetDeviceProperties(&props, 0), "props");
  const double l2 = props.l2CacheSize;
  auto copies_for = [&](double bytes) {
    return static_cast<int>(std::clamp(std::ceil(4.0 * l2 / bytes), 2.0, 32.0));
  };
  const int warmup = 3;

  nlohmann::json results = nlohmann::json::array();
  fmt::print("{:>12} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} | {:>9} {:>9} {:>9} {:>9} {:>7}\n",
             "shape", "bits/v", "decode_us", "GB/s", "copy_GB/s", "frac_copy", "", "cublas16",
             "cublasbf", "fused_us", "2pass_us", "kept");
  for (const std::string& shape : shapes) {
    int64_t rows = 0, cols = 0;
    if (std::sscanf(shape.c_str(), "%ldx%ld", &rows, &cols) != 2 || rows <= 0 || cols <= 0)
      fail("--shapes: '{}' is not ROWSxCOLS", shape);
    const int64_t n = rows * cols;
    const auto t0 = std::chrono::steady_clock::now();
    const Tensor w = realistic_bf16(rows, cols, sigma, 1 + rows);
    const CompressedMatrix c =
        compress(pack(w, FormatKind::Dense, Pattern{}), CodecParams::parse("lossless:gpu"));
    const CompressionStats st = compression_stats(c);
    const double encode_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    const double out_bytes = 2.0 * n;
    const int copies = copies_for(out_bytes + st.value_bytes);
    std::vector<DeviceLossless> dev;
    for (int i = 0; i < copies; ++i) dev.push_back(upload_lossless(c));
    std::vector<DeviceBuffer> outs;
    for (int i = 0; i < copies; ++i) outs.emplace_back(2 * n);
    DeviceBuffer err(sizeof(int));
    check_cuda(cudaMemset(err.data(), 0, sizeof(int)), "memset");
    int* errp = static_cast<int*>(err.data());

    // Correctness: the device decode is the original, bit for bit.
    check_cuda(
        lossless_decode(dev[0].weights, static_cast<uint16_t*>(outs[0].data()), errp, stream),
        "decode");
    check_cuda(cudaStreamSynchronize(stream), "decode");
    std::vector<uint16_t> back(n);
    outs[0].download(back.data(), 2 * n);
    int error = 0;
    err.download(&error, sizeof(int));
    const bool exact = error == 0 && std::memcmp(back.data(), w.bytes().data(), 2 * n) == 0;
    if (!exact) fail("{}: GPU decode differs from the original (error flag {})", shape, error);

    const double decode_us = bench::median_us(
        [&](int i) {
          return lossless_decode(dev[i % copies].weights,
                                 static_cast<uint16_t*>(outs[i % copies].data()), errp, stream);
        },
        warmup, repeats, stream);
    const double copy_us = bench::median_us(
        [&](int i) {
          return cudaMemcpyAsync(outs[i % copies].data(), outs[(i + 1) % copies].data(), 2 * n,
                                 cudaMemcpyDeviceToDevice, stream);
        },
        warmup, repeats, stream);

    // GEMV: x random bf16 (and its fp16 twin), dense bf16 / fp16 weight copies for cuBLAS.
    std::vector<uint16_t> xb(cols), xh(cols);
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<float> ux(-1.0f, 1.0f);
    for (int64_t k = 0; k < cols; ++k) {
      const float v = ux(rng);
      xb[k] = bf16_from_f32(v);
      xh[k] = f16_from_f32(f32_from_bf16(xb[k]));
    }
    DeviceBuffer x16(2 * cols), xbf(2 * cols), y32(4 * rows), y32b(4 * rows), y16(2 * rows);
    xbf.upload(xb.data(), 2 * cols);
    x16.upload(xh.data(), 2 * cols);
    const int dense_copies = copies_for(out_bytes);
    std::vector<DeviceBuffer> dense_bf, dense_h;
    std::vector<uint16_t> wh(n);
    const auto* wb = reinterpret_cast<const uint16_t*>(w.bytes().data());
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) wh[i] = f16_from_f32(f32_from_bf16(wb[i]));
    for (int i = 0; i < dense_copies; ++i) {
      dense_bf.emplace_back(2 * n);
      dense_bf.back().upload(wb, 2 * n);
      dense_h.emplace_back(2 * n);
      dense_h.back().upload(wh.data(), 2 * n);
    }
    const auto* xbp = static_cast<const uint16_t*>(xbf.data());
    // Fused vs cuBLAS bf16 on the same inputs.
    check_cuda(lossless_gemv(dev[0].weights, xbp, static_cast<float*>(y32.data()), errp, stream),
               "gemv");
    check_cuda(cublas_gemv(cublas, dense_bf[0].data(), CUDA_R_16BF, xbp, y32b.data(), CUDA_R_32F,
                           rows, cols),
               "cublas");
    check_cuda(cudaStreamSynchronize(stream), "gemv");
    std::vector<float> yf(rows), yc(rows);
    y32.download(yf.data(), 4 * rows);
    y32b.download(yc.data(), 4 * rows);
    double diff = 0, norm = 0;
    for (int64_t r = 0; r < rows; ++r) {
      diff += double(yf[r] - yc[r]) * (yf[r] - yc[r]);
      norm += double(yc[r]) * yc[r];
    }
    const double rel = std::sqrt(diff / std::max(norm, 1e-30));
    if (!(rel < 1e-4)) fail("{}: fused GEMV differs from cuBLAS (relative {})", shape, rel);

    const double cublas_h_us = bench::median_us(
        [&](int i) {
          return cublas_gemv(cublas, dense_h[i % dense_copies].data(), CUDA_R_16F, x16.data(),
                             y16.data(), CUDA_R_16F, rows, cols);
        },
        warmup, repeats, stream);
    const double cublas_bf_us = bench::median_us(
        [&](int i) {
          return cublas_gemv(cublas, dense_bf[i % dense_copies].data(), CUDA_R_16BF, xbp,
                             y32b.data(), CUDA_R_32F, rows, cols);
        },
        warmup, repeats, stream);
    const double fused_us = bench::median_us(
        [&](int i) {
          return lossless_gemv(dev[i % copies].weights, xbp, static_cast<float*>(y32.data()), errp,
                               stream);
        },
        warmup, repeats, stream);
    const double two_pass_us = bench::median_us(
        [&](int i) {
          const cudaError_t e =
              lossless_decode(dev[i % copies].weights,
                              static_cast<uint16_t*>(outs[i % copies].data()), errp, stream);
          if (e != cudaSuccess) return e;
          return cublas_gemv(cublas, outs[i % copies].data(), CUDA_R_16BF, xbp, y32b.data(),
                             CUDA_R_32F, rows, cols);
        },
        warmup, repeats, stream);
    err.download(&error, sizeof(int));
    if (error) fail("{}: the decoder flagged chunk {} during timing", shape, error - 1);

    const double decode_gbps = out_bytes / (decode_us * 1e3);
    const double copy_gbps = out_bytes / (copy_us * 1e3);
    fmt::print(
        "{:>12} {:7.3f} {:9.1f} {:9.1f} {:9.1f} {:9.3f} {:>8} | {:9.1f} {:9.1f} {:9.1f} {:9.1f} "
        "{:7.3f}\n",
        shape, st.bits_per_value(), decode_us, decode_gbps, copy_gbps, decode_gbps / copy_gbps, "",
        cublas_h_us, cublas_bf_us, fused_us, two_pass_us, cublas_h_us / fused_us);
    results.push_back({
        {"shape", shape},
        {"rows", rows},
        {"cols", cols},
        {"values", n},
        {"dtype", "bf16"},
        {"weights", fmt::format("Gaussian, per-row std {} * U[0.5, 1.5]", sigma)},
        {"bits_per_value", st.bits_per_value()},
        {"compressed_bytes", st.value_bytes},
        {"ratio_vs_bf16", st.value_bytes / out_bytes},
        {"encode_s_host", encode_s},
        {"bit_exact", exact},
        {"copies_rotated", copies},
        {"decode_us", decode_us},
        {"decode_gbps_output", decode_gbps},
        {"copy_us", copy_us},
        {"copy_gbps_output", copy_gbps},
        {"decode_fraction_of_copy", decode_gbps / copy_gbps},
        {"cublas_f16_gemv_us", cublas_h_us},
        {"cublas_bf16_gemv_us", cublas_bf_us},
        {"fused_gemv_us", fused_us},
        {"two_pass_gemv_us", two_pass_us},
        {"fused_fraction_of_cublas_f16", cublas_h_us / fused_us},
        {"two_pass_fraction_of_cublas_f16", cublas_h_us / two_pass_us},
        {"fused_vs_cublas_rel_diff", rel},
    });
  }
  nlohmann::json j;
  j["benchmark"] = "gpu-rans";
  j["device"] = props.name;
  j["date"] = today();
  j["m"] = 1;
  j["repeats"] = repeats;
  j["timing"] =
      "CUDA events per launch, median; copies rotated (total >= 4x L2); GB/s = decoded output "
      "bytes (2 per value) / time; copy = cudaMemcpy D2D of the output size; kept = cuBLAS fp16 "
      "GEMV time / fused GEMV time";
  j["results"] = results;
  if (!out_path.empty()) {
    std::ofstream(out_path) << j.dump(2) << "\n";
    fmt::print("wrote {}\n", out_path);
  }
  cublasDestroy(cublas);
  cudaStreamDestroy(stream);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sparsa GPU entropy-decode benchmark"};
  std::vector<std::string> shapes = {"4096x4096", "14336x4096"};
  int repeats = 50;
  double sigma = 0.02;
  std::string out;
  app.add_option("--shapes", shapes, "ROWSxCOLS, comma-separated")->delimiter(',');
  app.add_option("--repeats", repeats, "timed launches per measurement")
      ->check(CLI::Range(3, 1000));
  app.add_option("--sigma", sigma, "weight standard deviation")->check(CLI::PositiveNumber);
  app.add_option("--out", out, "JSON results file");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(shapes, repeats, sigma, out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "gpu_rans: error: {}\n", e.what());
    return 2;
  }
}
