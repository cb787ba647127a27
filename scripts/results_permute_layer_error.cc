// Per-layer diagnosis of `sparsa prune --permute` (docs/results.md, "Why the permutation can
// lose at 64:2:8"): for every 3rd transformer block (argv[2], default 3), each linear layer is
// pruned by the method (argv[3]: sparsegpt or wanda) to the pattern (argv[1], default 64:2:8)
// without and with its own input-channel permutation (find_channel_permutation on the method's
// score, 2 rounds, as `prune --permute-per-layer --permute-rounds 2` does); the pruned layer's
// output error sum_r e_r^T H e_r / samples (e = W - W_pruned in the original column order) is
// reported on the calibration windows that chose the mask (the first 4 of 256 tokens of
// data/eval/calibration.txt: in-sample) and on the rest of the calibration text (held out,
// 15 windows). Only the calibration text is read. Build against a CPU build of the library:
//   g++ -O2 -std=c++20 -fopenmp -DFMT_SHARED -DHWY_SHARED_DEFINE -Iinclude -Isrc \
//     scripts/results_permute_layer_error.cc -o /tmp/layer_error build/h/libsparsa.a -lfmt -lhwy \
//     -lzstd -lxxhash -lpthread
//   OMP_NUM_THREADS=2 /tmp/layer_error 64:2:8 3 sparsegpt > layer-error.txt
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <map>
#include "sparsa/channel_permutation.h"
#include "sparsa/gguf.h"
#include "sparsa/model.h"
#include "sparsa/model_prune.h"
#include "sparsa/prune.h"
#include "sparsa/tokenizer.h"
using namespace sparsa;

static double err(const std::vector<float>& w, const std::vector<float>& p, const std::vector<float>& h, int64_t rows, int64_t n) {
  double total = 0;
#pragma omp parallel for reduction(+:total)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> e(n);
    for (int64_t j = 0; j < n; ++j) e[j] = double(w[r*n+j]) - p[r*n+j];
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) { if (e[i]==0) continue; double hi=0; for (int64_t j=0;j<n;++j) hi += double(h[i*n+j])*e[j]; acc += e[i]*hi; }
    total += acc;
  }
  return total;
}
static std::vector<float> permH(const std::vector<float>& h, int64_t n, const std::vector<int32_t>& p) {
  std::vector<float> o(h.size());
  for (int64_t i=0;i<n;++i) for (int64_t j=0;j<n;++j) o[i*n+j]=h[p[i]*n+p[j]];
  return o;
}
int main(int argc, char** argv) {
  const char* pat = argc > 1 ? argv[1] : "64:2:8";
  int stride = argc > 2 ? atoi(argv[2]) : 3;
  const std::string method = argc > 3 ? argv[3] : "sparsegpt";
  const Pattern pattern = Pattern::parse(pat);
  const GgufFile file = GgufFile::open(std::string(getenv("HOME")) + "/.cache/sparsa/SmolLM2-135M-Instruct.Q4_1.gguf");
  LlamaModel model = LlamaModel::from_gguf(file, {DType::F32});
  Tokenizer tok = Tokenizer::from_gguf(file);
  std::ifstream f("data/eval/calibration.txt"); std::stringstream ss; ss << f.rdbuf();
  auto tokens = tok.encode(ss.str());
  fprintf(stderr, "calib tokens %zu\n", tokens.size());
  CalibrationOptions o; o.window = 256; o.max_windows = 4; o.hessian = true;
  auto A = calibrate(model, std::span(tokens).subspan(0, 1024), o);
  o.max_windows = -1;
  auto B = calibrate(model, std::span(tokens).subspan(1024), o);
  fprintf(stderr, "heldout windows %lld\n", (long long)B.windows);
  std::map<std::string, std::array<double,6>> bytype;
  auto ls = block_linears(model);
  for (size_t li = 0; li < ls.size(); ++li) {
    Linear* l = ls[li];
    if ((li / 7) % stride) continue;
    const int64_t rows = l->w.rows, n = l->w.cols;
    auto w = unpack(l->w, l->name).to_f32();
    const auto& sa = A.at(l->name); const auto& sb = B.at(l->name);
    SparseGptHessian hp = sparsegpt_prepare(sa.hessian, n);
    std::vector<float> colw(n);
    for (int64_t j=0;j<n;++j){ double d=0; for (int64_t i=0;i<=j;++i) d += double(hp.hinv_upper[i*n+j])*hp.hinv_upper[i*n+j]; colw[j] = hp.dead[j]||d<=0?0.f:float(1/std::sqrt(d)); }
    if (method == "wanda") for (int64_t j=0;j<n;++j) colw[j] = std::sqrt(sa.sq_norms[j]);
    std::vector<float> sc(w.size()); for (size_t i=0;i<w.size();++i) sc[i]=std::fabs(w[i])*colw[i%n];
    PermutationOptions po; po.rounds = 2;
    auto perm = find_channel_permutation(pattern, {{sc, rows}}, n, po);
    std::vector<int32_t> id(n); for (int64_t j=0;j<n;++j) id[j]=j;
    double k0 = kept_score(pattern, sc, rows, n), k1 = kept_score(pattern, permute_columns(sc, rows, n, perm), rows, n);
    auto T = Tensor::from_f32(l->name, DType::F32, {rows, n}, w);
    std::vector<float> p0, p1;
    auto Hp = permH(sa.hessian, n, perm);
    auto wp = permute_columns(w, rows, n, perm);
    auto Tp = Tensor::from_f32(l->name, DType::F32, {rows, n}, wp);
    if (method == "sparsegpt") {
      p0 = sparsegpt_prune(T, pattern, hp).to_f32();
      auto p1p = sparsegpt_prune(Tp, pattern, sparsegpt_prepare(Hp, n)).to_f32();
      p1.resize(w.size()); for (int64_t r=0;r<rows;++r) for (int64_t j=0;j<n;++j) p1[r*n+perm[j]] = p1p[r*n+j];
    } else {
      auto m0 = make_mask(pattern, sc, rows, n); p0 = w; for (size_t i=0;i<w.size();++i) if(!m0[i]) p0[i]=0;
      auto scp = permute_columns(sc, rows, n, perm);
      auto m1 = make_mask(pattern, scp, rows, n); p1 = w;
      for (int64_t r=0;r<rows;++r) for (int64_t j=0;j<n;++j) if(!m1[r*n+j]) p1[r*n+perm[j]] = 0;
    }
    double a0 = err(w,p0,sa.hessian,rows,n)/sa.samples, a1 = err(w,p1,sa.hessian,rows,n)/sa.samples;
    double b0 = err(w,p0,sb.hessian,rows,n)/sb.samples, b1 = err(w,p1,sb.hessian,rows,n)/sb.samples;
    printf("%-28s kept %+6.2f%%  in-sample %.4g -> %.4g (%+6.2f%%)  held-out %.4g -> %.4g (%+6.2f%%)\n", l->name.c_str(), 100*(k1/k0-1), a0, a1, 100*(a1/a0-1), b0, b1, 100*(b1/b0-1));
    fflush(stdout);
    std::string t = l->name.substr(l->name.find('.', 4)+1);
    auto& x = bytype[t]; x[0]+=a0; x[1]+=a1; x[2]+=b0; x[3]+=b1;
  }
  for (auto& [t, x] : bytype) printf("TYPE %-20s in-sample %+6.2f%% held-out %+6.2f%%\n", t.c_str(), 100*(x[1]/x[0]-1), 100*(x[3]/x[2]-1));
}
