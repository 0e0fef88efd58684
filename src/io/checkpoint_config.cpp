#include "focusvla/io/checkpoint_config.h"

#include <cmath>
#include <limits>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"

namespace focusvla::io {
namespace {

using nlohmann::json;

std::string field_name(const std::string& source, const std::string& key) { return source + ": '" + key + "'"; }

const json& require(const json& j, const std::string& key, const std::string& source) {
  check(j.is_object(), source, "expected a JSON object");
  check(j.contains(key), field_name(source, key), "missing");
  return j.at(key);
}

// Plausibility bounds: generous for every Qwen2 / Qwen2.5 release (0.5B: hidden 896; 72B: hidden
// 8192, mlp 29568, 80 layers, 64 heads; vocab 152064; up to 131072 positions), small enough that a
// typo cannot make the loader ask for terabytes.
constexpr int64_t kMaxHiddenSize = 65536;
constexpr int64_t kMaxIntermediateSize = 262144;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 1024;
constexpr int64_t kMaxVocab = 4194304;
constexpr int64_t kMaxPositions = 16777216;
constexpr int64_t kMaxImageSize = 4096;  // pixels per side
constexpr int64_t kMaxImagesInInput = 64;
constexpr int64_t kMaxTopK = 65536;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

// A JSON value for a message, cut short: a malformed field may be megabytes long.
std::string brief(const json& v) {
  std::string text = v.dump();
  return text.size() <= 64 ? text : text.substr(0, 60) + " ...";
}

// A double for a message; nlohmann writes NaN and infinities as null.
std::string number_text(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return json(x).dump();
}

// An integer in [lo, hi]. Unsigned JSON integers above int64 are compared as such, never cast.
int64_t int_in_range(const json& v, const std::string& what, int64_t lo, int64_t hi) {
  check(v.is_number_integer(), what, "expected an integer, got " + brief(v));
  const bool above = v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(hi) : v.get<int64_t>() > hi;
  check(!above, what, "must be at most " + std::to_string(hi) + ", got " + brief(v));
  const int64_t i = v.get<int64_t>();
  if (i < lo) {
    const std::string bound = lo == 1 ? "must be positive" : lo == 0 ? "must not be negative"
                                                                     : "must be at least " + std::to_string(lo);
    throw Error(what + ": " + bound + ", got " + std::to_string(i));
  }
  return i;
}

int64_t get_int(const json& j, const std::string& key, const std::string& source, int64_t fallback, bool required,
                int64_t lo = kInt64Min, int64_t hi = kInt64Max) {
  if (!j.contains(key)) {
    check(!required, field_name(source, key), "missing");
    return fallback;
  }
  return int_in_range(j.at(key), field_name(source, key), lo, hi);
}

int64_t get_positive(const json& j, const std::string& key, const std::string& source, int64_t fallback, bool required,
                     int64_t hi) {
  return get_int(j, key, source, fallback, required, 1, hi);
}

// An image side in pixels: an integer in 1..kMaxImageSize (1e300, -224 or 224.5 are refused, not cast).
int64_t image_side(const json& v, const std::string& what) {
  bool ok = false;
  if (v.is_number_unsigned())
    ok = v.get<uint64_t>() >= 1 && v.get<uint64_t>() <= static_cast<uint64_t>(kMaxImageSize);
  else if (v.is_number_integer())
    ok = v.get<int64_t>() >= 1 && v.get<int64_t>() <= kMaxImageSize;
  check(ok, what, "entry " + brief(v) + " is not an integer in 1.." + std::to_string(kMaxImageSize));
  return v.get<int64_t>();
}

// `x`, or Error "<what>: <label>nan is not a finite number".
double finite(double x, const std::string& what, const std::string& label = "") {
  check(std::isfinite(x), what, label + number_text(x) + " is not a finite number");
  return x;
}

double get_number(const json& j, const std::string& key, const std::string& source, double fallback) {
  if (!j.contains(key)) return fallback;
  const json& v = j.at(key);
  check(v.is_number(), field_name(source, key), "expected a number, got " + brief(v));
  return finite(v.get<double>(), field_name(source, key));
}

// A number that must be finite and > 0 (epsilons, rope theta).
double get_positive_number(const json& j, const std::string& key, const std::string& source, double fallback) {
  const double v = get_number(j, key, source, fallback);
  check(v > 0, field_name(source, key), "must be positive, got " + number_text(v));
  return v;
}

std::string get_string(const json& j, const std::string& key, const std::string& source, const std::string& fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  const json& v = j.at(key);
  check(v.is_string(), field_name(source, key), "expected a string, got " + brief(v));
  return v.get<std::string>();
}

bool get_bool(const json& j, const std::string& key, const std::string& source, bool fallback) {
  if (!j.contains(key)) return fallback;
  const json& v = j.at(key);
  check(v.is_boolean(), field_name(source, key), "expected true or false, got " + brief(v));
  return v.get<bool>();
}

std::vector<double> get_numbers(const json& j, const std::string& key, const std::string& source) {
  if (!j.contains(key)) return {};
  const json& v = j.at(key);
  check(v.is_array(), field_name(source, key), "expected an array of numbers");
  std::vector<double> out;
  for (const auto& x : v) {
    check(x.is_number(), field_name(source, key), "entry " + brief(x) + " is not a number");
    out.push_back(finite(x.get<double>(), field_name(source, key), "entry "));
  }
  return out;
}

std::array<double, 3> get_triple(const json& j, const std::string& key, const std::string& source) {
  require(j, key, source);
  const std::vector<double> v = get_numbers(j, key, source);
  check(v.size() == 3, field_name(source, key), "expected 3 numbers, got " + std::to_string(v.size()));
  return {v[0], v[1], v[2]};
}

void check_one_of(const std::string& value, std::initializer_list<const char*> allowed, const std::string& what) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw Error(what + ": '" + value + "' is not one of " + list);
}

}  // namespace

Qwen2Config Qwen2Config::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source, "expected a JSON object");
  Qwen2Config c;
  c.hidden_size = get_positive(j, "hidden_size", source, 0, true, kMaxHiddenSize);
  c.intermediate_size = get_positive(j, "intermediate_size", source, 0, true, kMaxIntermediateSize);
  c.num_hidden_layers = get_positive(j, "num_hidden_layers", source, 0, true, kMaxLayers);
  c.num_attention_heads = get_positive(j, "num_attention_heads", source, 0, true, kMaxHeads);
  c.num_key_value_heads = get_positive(j, "num_key_value_heads", source, c.num_attention_heads, false, kMaxHeads);
  c.max_position_embeddings =
      get_positive(j, "max_position_embeddings", source, c.max_position_embeddings, false, kMaxPositions);
  c.vocab_size = get_positive(j, "vocab_size", source, c.vocab_size, false, kMaxVocab);
  c.rms_norm_eps = get_positive_number(j, "rms_norm_eps", source, c.rms_norm_eps);
  c.rope_theta = get_positive_number(j, "rope_theta", source, c.rope_theta);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", source, c.tie_word_embeddings);
  c.hidden_act = get_string(j, "hidden_act", source, c.hidden_act);
  c.torch_dtype = get_string(j, "torch_dtype", source, "");
  c.validate(source);
  return c;
}

const Qwen2Config& Qwen2Config::validate(const std::string& what) const {
  check(hidden_size > 0 && num_attention_heads > 0 && num_key_value_heads > 0 && intermediate_size > 0, what,
        "hidden_size, intermediate_size, num_attention_heads and num_key_value_heads must be positive");
  check(num_hidden_layers >= 1, what, "num_hidden_layers must be at least 1, got " + std::to_string(num_hidden_layers));
  check(hidden_size % num_attention_heads == 0, what,
        "hidden_size " + std::to_string(hidden_size) + " is not a multiple of num_attention_heads " +
            std::to_string(num_attention_heads));
  check(num_attention_heads % num_key_value_heads == 0, what,
        "num_attention_heads " + std::to_string(num_attention_heads) + " is not a multiple of num_key_value_heads " +
            std::to_string(num_key_value_heads));
  check(head_dim() % 2 == 0, what, "head dimension " + std::to_string(head_dim()) + " must be even for RoPE");
  check(hidden_act == "silu", field_name(what, "hidden_act"), "'" + hidden_act + "' is not supported (only silu)");
  check(max_position_embeddings > 0, what, "max_position_embeddings must be positive");
  check(rope_theta > 0, what, "rope_theta must be positive");
  return *this;
}

NormStats NormStats::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source, "expected a JSON object");
  NormStats s;
  s.mean = get_numbers(j, "mean", source);
  s.std = get_numbers(j, "std", source);
  s.min = get_numbers(j, "min", source);
  s.max = get_numbers(j, "max", source);
  s.q01 = get_numbers(j, "q01", source);
  s.q99 = get_numbers(j, "q99", source);
  if (j.contains("mask")) {
    const json& m = j.at("mask");
    check(m.is_array(), field_name(source, "mask"), "expected an array of booleans");
    for (const auto& b : m) {
      check(b.is_boolean(), field_name(source, "mask"), "entry " + brief(b) + " is not a boolean");
      s.mask.push_back(b.get<bool>());
    }
  }
  const size_t dim = s.q01.size();
  check(dim > 0 && s.q99.size() == dim, source, "q01 and q99 must be non-empty and of the same length");
  for (const auto* v : {&s.mean, &s.std, &s.min, &s.max})
    check(v->empty() || v->size() == dim, source, "mean/std/min/max must have " + std::to_string(dim) + " entries");
  check(s.mask.empty() || s.mask.size() == dim, source, "mask must have " + std::to_string(dim) + " entries");
  return s;
}

NormStatsMap parse_norm_stats(const json& j, const std::string& source) {
  check(j.is_object(), source, "norm stats must be a JSON object keyed by dataset name");
  NormStatsMap out;
  for (const auto& [name, entry] : j.items()) {
    const std::string where = source + ": norm_stats['" + name + "']";
    check(entry.is_object(), where, "expected a JSON object");
    DatasetStats d;
    d.action = NormStats::from_json(require(entry, "action", where), where + ".action");
    if (entry.contains("proprio")) d.proprio = NormStats::from_json(entry.at("proprio"), where + ".proprio");
    d.num_transitions = get_int(entry, "num_transitions", where, 0, false, 0);
    d.num_trajectories = get_int(entry, "num_trajectories", where, 0, false, 0);
    out.emplace(name, std::move(d));
  }
  return out;
}

NormStatsMap load_dataset_statistics(const std::string& path) { return parse_norm_stats(read_json_file(path), path); }

namespace {

// The enum value of j[key] (a string, one of `values`' names), `fallback` when absent or null.
template <typename Enum, size_t N>
Enum get_enum(const json& j, const std::string& key, const std::string& source, Enum fallback,
              const std::array<Enum, N>& values) {
  const std::string text = get_string(j, key, source, to_string(fallback));
  std::string list;
  for (const Enum value : values) {
    if (text == to_string(value)) return value;
    list += (list.empty() ? "" : ", ") + std::string(to_string(value));
  }
  throw Error(source + ": focus." + key + ": '" + text + "' is not one of " + list);
}

}  // namespace

const char* to_string(FocusAttention attention) {
  switch (attention) {
    case FocusAttention::cascaded: return "cascaded";
    case FocusAttention::mixed: return "mixed";
  }
  return "?";
}

const char* to_string(FocusGate gate) {
  switch (gate) {
    case FocusGate::element: return "element";
    case FocusGate::head: return "head";
    case FocusGate::scalar: return "scalar";
    case FocusGate::none: return "none";
  }
  return "?";
}

const char* to_string(FocusValueSource value_source) {
  switch (value_source) {
    case FocusValueSource::embeddings: return "embeddings";
    case FocusValueSource::layer: return "layer";
  }
  return "?";
}

FocusConfig FocusConfig::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source, "'focus' must be a JSON object");
  for (const auto& [key, value] : j.items())
    check_one_of(key, {"attention", "top_k", "gate", "value_source"}, source + ": focus key");
  FocusConfig f;
  f.attention = get_enum(j, "attention", source, f.attention,
                         std::array<FocusAttention, 2>{FocusAttention::cascaded, FocusAttention::mixed});
  f.top_k = get_int(j, "top_k", source, f.top_k, false);
  f.gate = get_enum(j, "gate", source, f.gate,
                    std::array<FocusGate, 4>{FocusGate::element, FocusGate::head, FocusGate::scalar, FocusGate::none});
  f.value_source = get_enum(j, "value_source", source, f.value_source,
                            std::array<FocusValueSource, 2>{FocusValueSource::embeddings, FocusValueSource::layer});
  check(f.top_k >= 0, source + ": focus.top_k", "must be 0 (off) or positive, got " + std::to_string(f.top_k));
  check(f.top_k <= kMaxTopK, source + ": focus.top_k",
        "must be at most " + std::to_string(kMaxTopK) + ", got " + std::to_string(f.top_k));
  return f;
}

VlaConfig VlaConfig::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source, "expected a JSON object");
  VlaConfig c;
  c.model_type = get_string(j, "model_type", source, "");
  check(c.model_type == "openvla" || c.model_type == "focusvla", field_name(source, "model_type"),
        "'" + c.model_type + "' is not a VLA-Adapter checkpoint (expected 'openvla')");
  const json& ids = require(j, "timm_model_ids", source);
  check(ids.is_array() && !ids.empty(), field_name(source, "timm_model_ids"), "expected a non-empty array");
  for (const auto& id : ids) {
    check(id.is_string(), field_name(source, "timm_model_ids"), "entry " + brief(id) + " is not a string");
    c.timm_model_ids.push_back(id.get<std::string>());
  }
  if (j.contains("image_sizes")) {
    const json& sizes = j.at("image_sizes");
    const std::string what = field_name(source, "image_sizes");
    check(sizes.is_array(), what, "expected an array of integers, got " + brief(sizes));
    for (const auto& s : sizes) c.image_sizes.push_back(image_side(s, what));
  }
  c.use_fused_vision_backbone = get_bool(j, "use_fused_vision_backbone", source, ids.size() > 1);
  check(c.timm_model_ids.size() == (c.use_fused_vision_backbone ? 2u : 1u), field_name(source, "timm_model_ids"),
        std::to_string(c.timm_model_ids.size()) + " ids disagree with use_fused_vision_backbone");
  c.vision_backbone_id = get_string(j, "vision_backbone_id", source, "");
  c.llm_backbone_id = get_string(j, "llm_backbone_id", source, "");
  c.arch_specifier = get_string(j, "arch_specifier", source, "");
  c.torch_dtype = get_string(j, "torch_dtype", source, "");
  c.num_images_in_input = get_int(j, "num_images_in_input", source, 0, false, 0, kMaxImagesInInput);
  c.text_config = Qwen2Config::from_json(require(j, "text_config", source), source + ": text_config");
  if (j.contains("norm_stats") && !j.at("norm_stats").is_null())
    c.norm_stats = parse_norm_stats(j.at("norm_stats"), source);
  if (j.contains("focus") && !j.at("focus").is_null()) c.focus = FocusConfig::from_json(j.at("focus"), source + ": focus");
  return c;
}

VlaConfig VlaConfig::load(const std::string& path) { return from_json(read_json_file(path), path); }

PreprocessorConfig PreprocessorConfig::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source, "expected a JSON object");
  PreprocessorConfig c;
  c.image_resize_strategy = get_string(j, "image_resize_strategy", source, c.image_resize_strategy);
  c.use_fused_vision_backbone = get_bool(j, "use_fused_vision_backbone", source, true);
  const json& means = require(j, "means", source);
  const json& stds = require(j, "stds", source);
  check(means.is_array() && stds.is_array() && means.size() == stds.size() && !means.empty(), source,
        "'means' and 'stds' must be arrays with one entry per backbone");
  const size_t n = means.size();
  const bool tvf = j.contains("tvf_normalize_params") && j.at("tvf_normalize_params").is_array();
  if (tvf)
    check(j.at("tvf_normalize_params").size() == n, field_name(source, "tvf_normalize_params"),
          "expected " + std::to_string(n) + " entries, one per backbone");
  for (size_t i = 0; i < n; ++i) {
    const std::string where = source + " backbone " + std::to_string(i);
    Backbone b;
    if (tvf) {
      const json& p = j.at("tvf_normalize_params")[i];
      b.mean = get_triple(p, "mean", where + " tvf_normalize_params");
      b.std = get_triple(p, "std", where + " tvf_normalize_params");
    } else {
      json wrapped = {{"mean", means[i]}, {"std", stds[i]}};
      b.mean = get_triple(wrapped, "mean", where);
      b.std = get_triple(wrapped, "std", where);
    }
    for (double s : b.std) check(s > 0, where, "normalization std must be positive");
    if (j.contains("input_sizes")) {
      const json& sizes = j.at("input_sizes");
      check(sizes.is_array() && sizes.size() == n, field_name(source, "input_sizes"), "expected one entry per backbone");
      const std::string what = field_name(source, "input_sizes") + " backbone " + std::to_string(i);
      check(sizes[i].is_array() && sizes[i].size() == 3, what, "expected [3, H, W], got " + brief(sizes[i]));
      check(sizes[i][0] == 3, what, "expected 3 channels, got " + brief(sizes[i][0]));
      b.input_size = {3, image_side(sizes[i][1], what), image_side(sizes[i][2], what)};
    }
    if (j.contains("interpolations")) {
      const json& interp = j.at("interpolations");
      check(interp.is_array() && interp.size() == n && interp[i].is_string(), field_name(source, "interpolations"),
            "expected one string per backbone");
      b.interpolation = interp[i].get<std::string>();
    }
    c.backbones.push_back(b);
  }
  return c;
}

PreprocessorConfig PreprocessorConfig::load(const std::string& path) { return from_json(read_json_file(path), path); }

}  // namespace focusvla::io
