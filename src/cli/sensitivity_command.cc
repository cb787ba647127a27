// sparsa sensitivity MODEL -p PATTERN [--method M] [--text FILE] [--ctx 512] [--max-windows N]
//                   [--calib FILE] -o OUT.svg
// Perplexity with one transformer block at a time pruned (its q, k, v, o, gate, up and down),
// every other block dense: which blocks tolerate the pattern. Prints a table on stdout, writes
// an SVG plot (hand-written: a dozen elements do not justify a plotting dependency), and shows
// progress on stderr, one line per block.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/commands.h"
#include "cli/model_source.h"
#include "sparsa/error.h"
#include "sparsa/model.h"
#include "sparsa/model_prune.h"
#include "sparsa/tokenizer.h"

namespace sparsa::cli {
namespace {

struct SensitivityOptions {
  std::string model;
  std::string pattern;
  std::string method = "magnitude";
  std::string text = "data/eval/eval.txt";
  std::string calib = "data/eval/calibration.txt";
  std::string output;
  int64_t ctx = 512;
  int64_t max_windows = 2;
};

std::string read_whole(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the {}", path, what);
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().empty()) fail("{}: the {} is empty", path, what);
  return s.str();
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

// Perplexity per block as points joined by a line, the dense baseline as a dashed line. The y
// axis is logarithmic when the values span more than a factor of 10.
std::string svg_plot(const std::vector<double>& ppl, double dense, const std::string& title) {
  const double w = 760, h = 440, left = 80, right = 20, top = 40, bottom = 60;
  const double pw = w - left - right, ph = h - top - bottom;
  double lo = std::min(dense, *std::min_element(ppl.begin(), ppl.end()));
  double hi = std::max(dense, *std::max_element(ppl.begin(), ppl.end()));
  const bool log_y = hi / lo > 10;
  if (!log_y) {
    const double pad = std::max((hi - lo) * 0.08, hi * 0.01);
    lo = std::max(0.0, lo - pad);
    hi += pad;
  } else {
    lo /= 1.3;
    hi *= 1.3;
  }
  const auto fy = [&](double v) {
    const double t = log_y ? (std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo))
                           : (v - lo) / (hi - lo);
    return top + ph * (1 - t);
  };
  const int64_t n = int64_t(ppl.size());
  const auto fx = [&](double i) { return left + pw * (n > 1 ? i / double(n - 1) : 0.5); };
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{3}</text>\n",
      w, h, left + pw / 2, xml_escape(title));
  // Axes, ticks and labels.
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>\n", left,
                   top, top + ph);
  s += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n", left,
                   top + ph, left + pw);
  const int64_t xstep = std::max<int64_t>(1, (n + 14) / 15);
  for (int64_t i = 0; i < n; i += xstep)
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"black\"/>"
        "<text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
        fx(double(i)), top + ph, top + ph + 5, top + ph + 18, i);
  std::vector<double> yticks;
  if (log_y) {
    for (double d = std::pow(10.0, std::floor(std::log10(lo))); d <= hi; d *= 10)
      for (double k : {1.0, 2.0, 5.0})
        if (d * k >= lo && d * k <= hi) yticks.push_back(d * k);
  } else {
    const double raw = (hi - lo) / 6, mag = std::pow(10.0, std::floor(std::log10(raw)));
    const double step = raw / mag < 2 ? 2 * mag : raw / mag < 5 ? 5 * mag : 10 * mag;
    for (double v = std::ceil(lo / step) * step; v <= hi; v += step) yticks.push_back(v);
  }
  for (double v : yticks)
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#ddd\"/>"
        "<text x=\"{3}\" y=\"{4}\" text-anchor=\"end\">{5:g}</text>\n",
        left, fy(v), left + pw, left - 6, fy(v) + 4, v);
  s += fmt::format(
      "<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">pruned transformer block (index; all "
      "other blocks dense)</text>\n",
      left + pw / 2, h - 15);
  s += fmt::format(
      "<text transform=\"translate(20 {0}) rotate(-90)\" text-anchor=\"middle\">perplexity "
      "(exp of mean NLL in nats/token{1})</text>\n",
      top + ph / 2, log_y ? "; log scale" : "");
  // Dense baseline.
  s += fmt::format(
      "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/>"
      "<text x=\"{2}\" y=\"{3}\" text-anchor=\"end\" fill=\"#c00\">dense {4:.2f}</text>\n",
      left, fy(dense), left + pw, fy(dense) - 5, dense);
  std::string points;
  for (int64_t i = 0; i < n; ++i) points += fmt::format("{:.1f},{:.1f} ", fx(double(i)), fy(ppl[i]));
  s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"#246\"/>\n", points);
  for (int64_t i = 0; i < n; ++i)
    s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"#246\"><title>block {}: "
                     "{:.4f}</title></circle>\n",
                     fx(double(i)), fy(ppl[i]), i, ppl[i]);
  s += "</svg>\n";
  return s;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_sensitivity(const SensitivityOptions& o) {
  // Every check before the slow part.
  if (o.method != "magnitude" && o.method != "wanda" && o.method != "sparsegpt")
    fail("--method '{}': expected magnitude, wanda or sparsegpt", o.method);
  const Pattern pattern = Pattern::parse(o.pattern);
  if (pattern.kind == PatternKind::Unstructured && pattern.global)
    fail("pattern '{}': global patterns are not supported for models; use unstructured:{}",
         pattern.to_string(), pattern.sparsity);
  if (pattern.kind == PatternKind::Dense) fail("pattern 'dense': nothing would be pruned");
  if (o.method == "sparsegpt" && pattern.kind != PatternKind::Unstructured &&
      pattern.kind != PatternKind::NM && pattern.kind != PatternKind::VNM)
    fail("pattern '{}': --method sparsegpt supports unstructured, N:M and V:N:M patterns",
         pattern.to_string());
  if (o.ctx < 2) fail("--ctx {}: a window needs at least 2 tokens", o.ctx);
  if (o.max_windows < 1) fail("--max-windows {}: must be at least 1", o.max_windows);
  const std::filesystem::path out(o.output);
  if (out.extension() != ".svg") fail("-o {}: the plot is written as SVG; name it *.svg", o.output);
  const auto parent = out.parent_path().empty() ? std::filesystem::path(".") : out.parent_path();
  if (!std::filesystem::is_directory(parent))
    fail("-o {}: directory '{}' does not exist", o.output, parent.string());
  const std::string text = read_whole(o.text, "text file");
  const std::string calib = o.method == "magnitude" ? "" : read_whole(o.calib, "calibration text");

  auto t0 = std::chrono::steady_clock::now();
  LoadedModel loaded = load_model(o.model, DType::F32);
  LlamaModel& model = loaded.model;
  if (o.ctx > model.config().context_length)
    fail("--ctx {} exceeds the model's context length {}", o.ctx, model.config().context_length);
  fmt::print(stderr, "sensitivity: loaded {} in {:.1f} s\n", o.model, seconds_since(t0));
  const std::vector<int32_t> tokens = loaded.tokenizer.encode(text);
  if (int64_t(tokens.size()) < 2) fail("{}: fewer than 2 tokens", o.text);

  CalibrationStatistics stats;
  if (o.method != "magnitude") {
    t0 = std::chrono::steady_clock::now();
    CalibrationOptions copt;
    copt.hessian = o.method == "sparsegpt";
    try {
      stats = calibrate(model, loaded.tokenizer.encode(calib), copt);
    } catch (const Error& e) {
      fail("--calib {}: {}", o.calib, e.what());
    }
    fmt::print(stderr, "sensitivity: calibrated on {} ({} windows) in {:.1f} s\n", o.calib,
               stats.windows, seconds_since(t0));
  }

  t0 = std::chrono::steady_clock::now();
  const PerplexityResult dense = perplexity(model, tokens, o.ctx, o.max_windows);
  fmt::print(stderr, "sensitivity: dense perplexity {:.4f} ({} tokens scored, {:.1f} s)\n",
             dense.perplexity, dense.scored_tokens, seconds_since(t0));
  const int64_t blocks = model.config().n_layers;
  std::vector<double> ppl;
  for (int64_t b = 0; b < blocks; ++b) {
    t0 = std::chrono::steady_clock::now();
    LlamaLayer& layer = model.weights().layers[b];
    const LlamaLayer saved = layer;
    prune_linears({&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.w_gate, &layer.w_up,
                   &layer.w_down},
                  o.method, pattern, o.method == "magnitude" ? nullptr : &stats);
    ppl.push_back(perplexity(model, tokens, o.ctx, o.max_windows).perplexity);
    layer = saved;
    fmt::print(stderr, "sensitivity: block {}/{} pruned: perplexity {:.4f} ({:.1f} s)\n", b + 1,
               blocks, ppl.back(), seconds_since(t0));
  }

  fmt::print("model       {} ({})\n", o.model, loaded.description);
  fmt::print("pattern     {} ({}), one transformer block at a time\n", pattern.to_string(),
             o.method);
  fmt::print("text        {}: {} windows of ctx {}, {} tokens scored\n", o.text, dense.windows,
             o.ctx, dense.scored_tokens);
  fmt::print("\n| pruned block | perplexity | vs dense |\n| --- | --- | --- |\n");
  fmt::print("| none (dense) | {:.4f} | - |\n", dense.perplexity);
  for (int64_t b = 0; b < blocks; ++b)
    fmt::print("| {} | {:.4f} | {:+.4f} |\n", b, ppl[b], ppl[b] - dense.perplexity);
  const std::string title =
      fmt::format("{}: one block at a time pruned to {} ({}), {} tokens",
                  std::filesystem::path(o.model).filename().string(), pattern.to_string(),
                  o.method, dense.scored_tokens);
  std::ofstream svg(out, std::ios::binary);
  svg << svg_plot(ppl, dense.perplexity, title);
  svg.close();
  if (!svg) fail("-o {}: cannot write the plot", o.output);
  fmt::print("\nwrote       {}\n", o.output);
}

}  // namespace

void register_sensitivity_command(CLI::App& app) {
  auto options = std::make_shared<SensitivityOptions>();
  CLI::App* command = app.add_subcommand(
      "sensitivity", "Perplexity with one transformer block at a time pruned (table + SVG plot)");
  command->add_option("model", options->model, "model: .gguf or Hugging Face checkpoint")
      ->required();
  command->add_option("-p,--pattern", options->pattern, "Pattern, e.g. 2:4, 64:2:8")->required();
  command->add_option("-o,--output", options->output, "SVG plot to write")->required();
  command->add_option("--method", options->method, "magnitude, wanda or sparsegpt")
      ->capture_default_str();
  command->add_option("--text", options->text, "evaluation text (UTF-8)")->capture_default_str();
  command->add_option("--calib", options->calib, "calibration text (wanda, sparsegpt)")
      ->capture_default_str();
  command->add_option("--ctx", options->ctx, "window length in tokens")->capture_default_str();
  command->add_option("--max-windows", options->max_windows, "windows scored per perplexity")
      ->capture_default_str();
  command->callback([options] { run_sensitivity(*options); });
}

}  // namespace sparsa::cli
