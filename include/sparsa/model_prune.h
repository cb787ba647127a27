// Pruning a whole Llama model with calibration: statistics of every linear layer's input
// (Wanda's per-channel squared norms, SparseGPT's Hessian X^T X) collected by running the model
// over calibration text, the per-layer pruning, and writing the pruned model as GGUF.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sparsa/channel_permutation.h"
#include "sparsa/model.h"
#include "sparsa/pattern.h"

namespace sparsa {

class GgufFile;

// Statistics of one linear layer's input X [samples, cols]. Layers that read the same input
// (q/k/v, gate/up) share one object.
struct LayerStatistics {
  int64_t cols = 0;
  int64_t samples = 0;            // rows of X seen
  std::vector<double> sq_norms;   // [cols]: sum of X_j^2 (Wanda's ||X_j||_2 squared)
  std::vector<float> hessian;     // [cols*cols] X^T X, symmetric; empty unless requested
};

struct CalibrationStatistics {
  std::map<std::string, std::shared_ptr<LayerStatistics>> layers;  // by Linear::name
  int64_t windows = 0, tokens = 0;
  // Throws sparsa::Error naming the layer when it was never observed.
  const LayerStatistics& at(const std::string& name) const;
};

struct CalibrationOptions {
  int64_t window = 256;     // tokens per window (a fresh KV cache each)
  int64_t max_windows = 4;  // < 0: every full window of the text
  bool hessian = false;     // also accumulate X^T X (SparseGPT)
  // >= 0: statistics of that transformer block's linear layers only, and each window's forward
  // stops after the block's last product (prune_model_sequential).
  int64_t block = -1;
};

// Runs the model over non-overlapping windows of `tokens`, collecting statistics for every
// linear layer of the transformer blocks (not the output head), or of options.block only. The
// model's activations as it stands are used for all layers (one pass; prune_model_sequential is
// SparseGPT's layer-sequential variant). Throws sparsa::Error for a block out of range.
CalibrationStatistics calibrate(LlamaModel& model, std::span<const int32_t> tokens,
                                const CalibrationOptions& options = {});

// The transformer blocks' linear layers (the output head is never pruned).
std::vector<Linear*> block_linears(LlamaModel& model);

// Prunes every block linear layer to `pattern` with method "magnitude", "wanda" (needs
// stats with sq_norms) or "sparsegpt" (needs stats with the Hessian). The layers stay packed
// dense in their value dtype, pruned entries exactly 0. Throws sparsa::Error for an unknown
// method, a global pattern, or missing statistics.
void prune_model(LlamaModel& model, const std::string& method, const Pattern& pattern,
                 const CalibrationStatistics* stats,
                 const std::function<void(const Linear&)>& progress = {});

// V:N:M / N:M input-channel permutation before pruning (`sparsa prune --permute`). For each
// transformer block: ffn_down's input permutation is found first and folded into the producing
// layers (rows of ffn_gate and ffn_up permuted together, columns of ffn_down), so nothing is
// stored for it; then q/k/v get one shared permutation (they read one input), o its own, and
// gate/up one shared permutation, each searched on all the layers that share it and stored as
// Linear::input_perm of each (their inputs are the normed residual stream or the attention
// output, which no single producing layer can permute); equal permutations keep the stacked
// q|k|v and gate|up products on the GPU. options.shared = false: one permutation per layer
// instead. Each permutation maximises the importance
// kept under `pattern` (find_channel_permutation) with the method's score: |W| (magnitude),
// |W_ij| * ||X_j|| (wanda), |W_ij| / sqrt([H^-1]_jj) (sparsegpt: the OBS saliency's square
// root, which equals Wanda's score when H is diagonal), or, with options.objective ==
// OutputEnergy, the calibration output energy sum W_ij^2 * ||X_j||^2 kept under the method's
// own mask (stats required for every method then). The model computes the same function.
// Returns the calibration statistics in the permuted column order (one object per layer; empty
// without stats), to be passed to prune_model. Throws sparsa::Error when the pattern is not
// N:M or V:N:M, when statistics are missing, or when a layer already has a permutation.
struct PermutationSummary {
  double kept_identity = 0;  // kept importance (or energy) of the pattern's mask, over layers
  double kept_permuted = 0;
  // options.guard: calibration output error of the pruned layers without / with the chosen
  // permutations (summed over layers), and how many layers fell back to the identity.
  double error_identity = 0, error_chosen = 0;
  int64_t guarded = 0, reverted = 0;
};
CalibrationStatistics permute_model(LlamaModel& model, const std::string& method,
                                    const Pattern& pattern, const CalibrationStatistics* stats,
                                    const PermutationOptions& options = {},
                                    const std::function<void(const Linear&)>& progress = {},
                                    PermutationSummary* summary = nullptr);

// permute_model for transformer block `block` only (its layers must not be permuted yet);
// `stats` needs (at least) that block's layers. The summary covers this block.
CalibrationStatistics permute_block(LlamaModel& model, int64_t block, const std::string& method,
                                    const Pattern& pattern, const CalibrationStatistics* stats,
                                    const PermutationOptions& options = {},
                                    const std::function<void(const Linear&)>& progress = {},
                                    PermutationSummary* summary = nullptr);

// Layer-sequential calibration and pruning (SparseGPT's sequential variant, `sparsa prune
// --sequential`): for each transformer block b in order, the calibration windows run through
// the current model (blocks < b already permuted and pruned; the forward stops after block b)
// to collect block b's statistics, then block b is permuted (options.permute) and pruned, so
// each block's pruning sees, and compensates for, the error of the blocks before it. With
// `calibrated` false (magnitude without a statistics-based permutation objective) nothing is
// calibrated and the result equals permute_model + prune_model.
struct SequentialPruneOptions {
  CalibrationOptions calibration;  // window, max_windows, hessian (block is set per block)
  bool calibrated = true;
  bool permute = false;
  PermutationOptions permutation;
};
struct SequentialPruneSummary {
  PermutationSummary permutation;  // summed over blocks
  int64_t windows = 0, tokens = 0;  // calibration windows and tokens per block
};
// `block_progress(b, blocks)` is called before block b is calibrated, then every pruned layer
// goes to `progress`. Throws sparsa::Error as calibrate, permute_model and prune_model do.
SequentialPruneSummary prune_model_sequential(
    LlamaModel& model, const std::string& method, const Pattern& pattern,
    std::span<const int32_t> tokens, const SequentialPruneOptions& options,
    const std::function<void(int64_t block, int64_t blocks)>& block_progress = {},
    const std::function<void(const Linear&)>& progress = {});

// The linear layers of transformer block `block` (q, k, v, o, gate, up, down).
std::vector<Linear*> block_linears(LlamaModel& model, int64_t block);

// prune_model for the given layers only (e.g. one transformer block: `sparsa sensitivity`).
void prune_linears(const std::vector<Linear*>& layers, const std::string& method,
                   const Pattern& pattern, const CalibrationStatistics* stats,
                   const std::function<void(const Linear&)>& progress = {});

// Repacks every block linear layer into the pattern's default packed format (docs/formats.md).
void pack_model(LlamaModel& model, const Pattern& pattern);

// Bytes of the model's weights as held in memory: every packed linear layer (output head
// counted once even when tied), the token embedding and the norms.
int64_t model_bytes(const LlamaModel& model);

// Writes a GGUF file holding every metadata key of `source` plus `extra` (strings), every
// non-linear tensor copied as stored, and the model's block linear layers as F32.
void write_pruned_gguf(const GgufFile& source, const LlamaModel& model,
                       const std::filesystem::path& out,
                       const std::map<std::string, std::string>& extra);

// Writes a Hugging Face checkpoint directory `out_dir`: model.safetensors with every tensor of
// the source checkpoint (`source`: a directory or one .safetensors file), the block linear layers
// replaced by the model's (Q/K rows back in Hugging Face order, each tensor in its source dtype),
// `extra` added to the metadata, and the source directory's .json files (config, tokenizer).
void write_pruned_hf(const std::filesystem::path& source, const LlamaModel& model,
                     const std::filesystem::path& out_dir,
                     const std::map<std::string, std::string>& extra);

}  // namespace sparsa
