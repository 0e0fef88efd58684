#pragma once
// Typed views of a checkpoint's JSON files: config.json (Prismatic / OpenVLA layout with a Qwen2
// text_config and an optional FocusVLA `focus` section), preprocessor_config.json and
// dataset_statistics.json. Field names follow the files. Every reader validates what it keeps and
// throws Error naming the file and the field: integers must be integers within plausible bounds
// (e.g. hidden_size <= 65536, image sizes 1..4096; see checkpoint_config.cpp), numbers finite.

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace focusvla::io {

// HF `Qwen2Config` fields the decoder needs (SPEC section 7).
struct Qwen2Config {
  int64_t hidden_size = 896;
  int64_t intermediate_size = 4864;
  int64_t num_hidden_layers = 24;
  int64_t num_attention_heads = 14;
  int64_t num_key_value_heads = 2;
  int64_t max_position_embeddings = 32768;
  int64_t vocab_size = 151936;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e6;
  bool tie_word_embeddings = true;
  std::string hidden_act = "silu";
  std::string torch_dtype;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  // The one check that the numbers make a decoder (positive sizes, heads dividing the width and
  // each other, an even head dimension for RoPE, SiLU): from_json runs it, and so does the
  // decoder for a config built in code. Throws Error naming `what`; returns *this.
  const Qwen2Config& validate(const std::string& what) const;
  static Qwen2Config from_json(const nlohmann::json& j, const std::string& source);
};

// One dataset's statistics for one quantity (actions or proprio), SPEC section 10.
struct NormStats {
  std::vector<double> mean, std, min, max, q01, q99;
  std::vector<bool> mask;  // empty means all true
  size_t dim() const { return q01.size(); }
  static NormStats from_json(const nlohmann::json& j, const std::string& source);
};

struct DatasetStats {
  NormStats action;
  std::optional<NormStats> proprio;
  int64_t num_transitions = 0;
  int64_t num_trajectories = 0;
};

using NormStatsMap = std::map<std::string, DatasetStats>;
// Parses {"dataset": {"action": {...}, "proprio": {...}, ...}, ...}.
NormStatsMap parse_norm_stats(const nlohmann::json& j, const std::string& source);
NormStatsMap load_dataset_statistics(const std::string& path);

// The FocusVLA head's switches (SPEC 9.2), from config.json's "focus" section. The strings of the
// file are parsed (and validated) once, by from_json; to_string gives them back.
enum class FocusAttention { cascaded, mixed };           // "cascaded" | "mixed"
enum class FocusGate { element, head, scalar, none };    // "element" | "head" | "scalar" | "none"
enum class FocusValueSource { embeddings, layer };       // "embeddings" | "layer"
const char* to_string(FocusAttention attention);
const char* to_string(FocusGate gate);
const char* to_string(FocusValueSource value_source);

struct FocusConfig {
  FocusAttention attention = FocusAttention::cascaded;
  int64_t top_k = 256;  // 0 = patch-level focus off
  FocusGate gate = FocusGate::element;
  FocusValueSource value_source = FocusValueSource::embeddings;
  // Throws Error naming `source` and the field ("<source>: focus.gate: 'channel' is not one of
  // element, head, scalar, none") for an unknown key, value or type.
  static FocusConfig from_json(const nlohmann::json& j, const std::string& source);
};

// config.json of a VLA-Adapter / FocusVLA checkpoint.
struct VlaConfig {
  std::string model_type;
  std::vector<std::string> timm_model_ids;
  std::vector<int64_t> image_sizes;
  bool use_fused_vision_backbone = true;
  std::string vision_backbone_id;
  std::string llm_backbone_id;
  std::string arch_specifier;
  std::string torch_dtype;
  int64_t num_images_in_input = 0;  // cameras per observation; 0 when the file does not say
  Qwen2Config text_config;
  NormStatsMap norm_stats;
  std::optional<FocusConfig> focus;

  static VlaConfig from_json(const nlohmann::json& j, const std::string& source);
  static VlaConfig load(const std::string& path);
};

// preprocessor_config.json. Per backbone, the effective normalization is the one the reference
// applies: `tvf_normalize_params` when present (bf16-rounded values), else `means` / `stds`.
struct PreprocessorConfig {
  struct Backbone {
    std::array<int64_t, 3> input_size{3, 224, 224};
    std::string interpolation = "bicubic";
    std::array<double, 3> mean{0, 0, 0};
    std::array<double, 3> std{1, 1, 1};
  };
  std::vector<Backbone> backbones;
  std::string image_resize_strategy = "resize-naive";
  bool use_fused_vision_backbone = true;

  static PreprocessorConfig from_json(const nlohmann::json& j, const std::string& source);
  static PreprocessorConfig load(const std::string& path);
};

}  // namespace focusvla::io
