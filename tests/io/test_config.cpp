// Typed config readers against the real released config files (assets/vla-adapter-reference),
// and their errors. Torch-free: also runs in the AddressSanitizer build.

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/json_file.h"
#include "test_util.h"

namespace focusvla {
namespace {

using nlohmann::json;
using testing::asset_path;
using testing::expect_error;
using testing::scratch_dir;

json reference_config() { return io::read_json_file(asset_path("vla-adapter-reference/config.json")); }

std::string write_json(const std::string& dir, const std::string& name, const json& j) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << j.dump();
  return path;
}

TEST(ConfigVla, ReadsTheReleasedConfig) {
  const json raw = reference_config();
  const auto config = io::VlaConfig::load(asset_path("vla-adapter-reference/config.json"));
  EXPECT_EQ(config.model_type, raw["model_type"]);
  EXPECT_EQ(config.timm_model_ids, raw["timm_model_ids"].get<std::vector<std::string>>());
  EXPECT_EQ(config.image_sizes, raw["image_sizes"].get<std::vector<int64_t>>());
  EXPECT_EQ(config.use_fused_vision_backbone, raw["use_fused_vision_backbone"].get<bool>());
  EXPECT_EQ(config.llm_backbone_id, raw["llm_backbone_id"]);
  const json& text = raw["text_config"];
  const auto& t = config.text_config;
  EXPECT_EQ(t.hidden_size, text["hidden_size"]);
  EXPECT_EQ(t.intermediate_size, text["intermediate_size"]);
  EXPECT_EQ(t.num_hidden_layers, text["num_hidden_layers"]);
  EXPECT_EQ(t.num_attention_heads, text["num_attention_heads"]);
  EXPECT_EQ(t.num_key_value_heads, text["num_key_value_heads"]);
  EXPECT_EQ(t.max_position_embeddings, text["max_position_embeddings"]);
  EXPECT_EQ(t.vocab_size, text["vocab_size"]);
  EXPECT_EQ(t.rms_norm_eps, text["rms_norm_eps"].get<double>());
  EXPECT_EQ(t.rope_theta, text["rope_theta"].get<double>());
  EXPECT_EQ(t.tie_word_embeddings, text["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(t.head_dim(), text["hidden_size"].get<int64_t>() / text["num_attention_heads"].get<int64_t>());
  EXPECT_FALSE(config.focus.has_value());
  ASSERT_EQ(config.norm_stats.size(), raw["norm_stats"].size());
  for (const auto& [name, stats] : raw["norm_stats"].items()) {
    SCOPED_TRACE(name);
    const auto& parsed = config.norm_stats.at(name);
    EXPECT_EQ(parsed.action.q01, stats["action"]["q01"].get<std::vector<double>>());
    EXPECT_EQ(parsed.action.q99, stats["action"]["q99"].get<std::vector<double>>());
    EXPECT_EQ(parsed.action.mask, stats["action"]["mask"].get<std::vector<bool>>());
    EXPECT_EQ(parsed.num_transitions, stats["num_transitions"].get<int64_t>());
    EXPECT_EQ(parsed.proprio.has_value(), stats.contains("proprio"));
  }
}

TEST(ConfigVla, ReadsTheFocusSection) {
  json raw = reference_config();
  raw["focus"] = {{"attention", "mixed"}, {"top_k", 0}, {"gate", "head"}, {"value_source", "layer"}};
  const auto config = io::VlaConfig::from_json(raw, "config.json");
  ASSERT_TRUE(config.focus.has_value());
  EXPECT_EQ(config.focus->attention, io::FocusAttention::mixed);
  EXPECT_EQ(config.focus->top_k, 0);
  EXPECT_EQ(config.focus->gate, io::FocusGate::head);
  EXPECT_EQ(config.focus->value_source, io::FocusValueSource::layer);
  raw["focus"] = json::object();
  const auto defaults = io::VlaConfig::from_json(raw, "config.json");
  EXPECT_EQ(defaults.focus->attention, io::FocusAttention::cascaded);
  EXPECT_EQ(defaults.focus->top_k, 256);
  EXPECT_EQ(defaults.focus->gate, io::FocusGate::element);
  EXPECT_EQ(defaults.focus->value_source, io::FocusValueSource::embeddings);
}

// The switches are parsed once into enums; to_string gives the file's spelling back.
TEST(ConfigVla, FocusSwitchesRoundTrip) {
  for (const char* attention : {"cascaded", "mixed"})
    for (const char* gate : {"element", "head", "scalar", "none"})
      for (const char* value_source : {"embeddings", "layer"}) {
        const json raw = {{"attention", attention}, {"gate", gate}, {"value_source", value_source}};
        const auto focus = io::FocusConfig::from_json(raw, "config.json: focus");
        EXPECT_STREQ(io::to_string(focus.attention), attention);
        EXPECT_STREQ(io::to_string(focus.gate), gate);
        EXPECT_STREQ(io::to_string(focus.value_source), value_source);
      }
  expect_error([] { io::FocusConfig::from_json({{"attention", "parallel"}}, "config.json: focus"); },
               {"config.json", "focus.attention", "'parallel'", "cascaded, mixed"});
  expect_error([] { io::FocusConfig::from_json({{"value_source", "hidden"}}, "config.json: focus"); },
               {"config.json", "focus.value_source", "'hidden'", "embeddings, layer"});
  expect_error([] { io::FocusConfig::from_json({{"gate", 3}}, "config.json: focus"); },
               {"config.json", "'gate'", "expected a string"});
  // null means the default, as for every optional string of config.json.
  EXPECT_EQ(io::FocusConfig::from_json({{"gate", nullptr}}, "config.json: focus").gate, io::FocusGate::element);
}

TEST(ConfigVla, ErrorsNameTheFieldAndTheProblem) {
  const auto dir = scratch_dir("config_errors");
  {
    std::ofstream(dir + "/broken.json") << "{\"model_type\": ";
    expect_error([&] { io::VlaConfig::load(dir + "/broken.json"); }, {"broken.json", "invalid JSON"});
  }
  expect_error([&] { io::VlaConfig::load(dir + "/absent.json"); }, {"absent.json", "cannot open"});
  struct Case {
    std::function<void(json&)> edit;
    std::vector<std::string> fragments;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j.erase("text_config"); }, {"'text_config'", "missing"}},
      {[](json& j) { j["text_config"]["hidden_size"] = "896"; }, {"'hidden_size'", "expected an integer"}},
      {[](json& j) { j["text_config"]["num_attention_heads"] = 13; }, {"not a multiple of num_attention_heads"}},
      {[](json& j) { j["text_config"]["num_key_value_heads"] = 3; }, {"not a multiple of num_key_value_heads"}},
      {[](json& j) { j["text_config"]["hidden_act"] = "gelu"; }, {"'hidden_act'", "not supported"}},
      {[](json& j) { j["model_type"] = "llama"; }, {"'model_type'", "'llama'"}},
      {[](json& j) { j["timm_model_ids"] = json::array({"a"}); }, {"timm_model_ids", "disagree"}},
      {[](json& j) { j["focus"] = {{"top_k", -1}}; }, {"focus.top_k", "-1"}},
      {[](json& j) { j["focus"] = {{"gate", "channel"}}; }, {"focus.gate", "'channel'"}},
      {[](json& j) { j["focus"] = {{"topk", 3}}; }, {"focus key", "'topk'"}},
      {[](json& j) { j["norm_stats"]["bridge_orig"]["action"]["q99"] = json::array({1.0}); }, {"bridge_orig", "q01 and q99"}},
      {[](json& j) { j["norm_stats"]["bridge_orig"].erase("action"); }, {"bridge_orig", "'action'", "missing"}},
      {[](json& j) { j["norm_stats"]["bridge_orig"]["action"]["mask"] = json::array({true}); }, {"bridge_orig", "mask"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    json j = reference_config();
    cases[i].edit(j);
    const std::string path = write_json(dir, "config" + std::to_string(i) + ".json", j);
    SCOPED_TRACE(path);
    try {
      io::VlaConfig::load(path);
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("config" + std::to_string(i) + ".json"), std::string::npos) << e.what();
      for (const auto& fragment : cases[i].fragments)
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what() << "\nmissing: " << fragment;
    }
  }
}

TEST(ConfigPreprocessor, NormalizationComesFromTvfParamsFirst) {
  const json raw = io::read_json_file(asset_path("vla-adapter-reference/preprocessor_config.json"));
  const auto config = io::PreprocessorConfig::load(asset_path("vla-adapter-reference/preprocessor_config.json"));
  ASSERT_EQ(config.backbones.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const json& tvf = raw["tvf_normalize_params"][i];
    for (size_t c = 0; c < 3; ++c) {
      EXPECT_EQ(config.backbones[i].mean[c], tvf["mean"][c].get<double>());
      EXPECT_EQ(config.backbones[i].std[c], tvf["std"][c].get<double>());
    }
    EXPECT_EQ(config.backbones[i].input_size[1], raw["input_sizes"][i][1].get<int64_t>());
    EXPECT_EQ(config.backbones[i].interpolation, raw["interpolations"][i]);
  }
  // Without tvf_normalize_params the plain means/stds apply.
  json plain = raw;
  plain.erase("tvf_normalize_params");
  const auto fallback = io::PreprocessorConfig::from_json(plain, "preprocessor_config.json");
  EXPECT_EQ(fallback.backbones[0].mean[0], raw["means"][0][0].get<double>());
  EXPECT_EQ(fallback.backbones[0].std[2], raw["stds"][0][2].get<double>());
}

TEST(ConfigPreprocessor, ErrorsNameTheField) {
  json raw = io::read_json_file(asset_path("vla-adapter-reference/preprocessor_config.json"));
  raw["tvf_normalize_params"][1]["std"] = json::array({0.5, 0.0, 0.5});
  expect_error([&] { io::PreprocessorConfig::from_json(raw, "pp.json"); }, {"pp.json", "std must be positive"});
  raw = io::read_json_file(asset_path("vla-adapter-reference/preprocessor_config.json"));
  raw["tvf_normalize_params"][0]["mean"] = json::array({0.5, 0.5});
  expect_error([&] { io::PreprocessorConfig::from_json(raw, "pp.json"); }, {"pp.json", "'mean'", "expected 3 numbers"});
  raw.erase("means");
  expect_error([&] { io::PreprocessorConfig::from_json(raw, "pp.json"); }, {"pp.json", "'means'", "missing"});
}

TEST(ConfigStats, DatasetStatisticsFile) {
  const auto dir = scratch_dir("stats");
  const json raw = reference_config();
  json stats = {{"libero", raw["norm_stats"]["bridge_orig"]}};
  stats["libero"]["proprio"]["q01"] = json::array({-1, -1, -1, -1, -1, -1, -1, -1});
  stats["libero"]["proprio"]["q99"] = json::array({1, 1, 1, 1, 1, 1, 1, 1});
  stats["libero"]["proprio"].erase("mean");
  stats["libero"]["proprio"].erase("std");
  stats["libero"]["proprio"].erase("min");
  stats["libero"]["proprio"].erase("max");
  const auto parsed = io::load_dataset_statistics(write_json(dir, "dataset_statistics.json", stats));
  ASSERT_EQ(parsed.size(), 1u);
  ASSERT_TRUE(parsed.at("libero").proprio.has_value());
  EXPECT_EQ(parsed.at("libero").proprio->dim(), 8u);
  EXPECT_EQ(parsed.at("libero").action.dim(), 7u);
}

// expect_error with fragments known only at run time.
void expect_error_all(const std::function<void()>& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "expected focusvla::Error, got no exception";
  } catch (const Error& e) {
    for (const auto& fragment : fragments)
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what() << "\nmissing: " << fragment;
  }
}

// Loads `j` written to dir/name with `load`, expecting an Error naming the file and every fragment.
void expect_file_error(const std::string& dir, const std::string& name, const json& j,
                       const std::function<void(const std::string&)>& load, std::vector<std::string> fragments) {
  const std::string path = write_json(dir, name, j);
  SCOPED_TRACE(path + ": " + j.dump().substr(0, 200));
  fragments.push_back(path);
  expect_error_all([&] { load(path); }, fragments);
}

// Text that nlohmann parses into a number beyond double range: it throws out_of_range (406),
// not parse_error, which used to escape as "internal error" without the file name.
TEST(ConfigJson, NumberBeyondDoubleRangeNamesTheFile) {
  const auto dir = scratch_dir("config_1e500");
  const std::vector<std::pair<std::string, std::function<void(const std::string&)>>> loaders = {
      {"config.json", [](const std::string& p) { io::VlaConfig::load(p); }},
      {"preprocessor_config.json", [](const std::string& p) { io::PreprocessorConfig::load(p); }},
      {"dataset_statistics.json", [](const std::string& p) { io::load_dataset_statistics(p); }},
      {"any.json", [](const std::string& p) { io::read_json_file(p); }},
  };
  for (const auto& [name, load] : loaders) {
    SCOPED_TRACE(name);
    const std::string path = dir + "/" + name;
    std::ofstream(path) << R"({"model_type": "openvla", "rope_theta": 1e500})";
    expect_error([&] { load(path); }, {path, "invalid JSON", "1e500"});
  }
  expect_error([] { io::parse_json("[1, -1e500]", "inline.json"); }, {"inline.json", "invalid JSON", "1e500"});
}

// Nesting is bounded before any recursive nlohmann code (dump, copy) can run out of stack.
TEST(ConfigJson, DeepNestingIsRefused) {
  const auto dir = scratch_dir("config_deep");
  const std::string path = dir + "/preprocessor_config.json";
  std::ofstream(path) << R"({"means": )" << std::string(200000, '[') << std::string(200000, ']')
                      << R"(, "stds": [[1, 1, 1]]})";
  expect_error([&] { io::PreprocessorConfig::load(path); }, {path, "nested deeper than"});
  // Brackets inside strings do not count.
  const json ok = io::parse_json(R"({"a": ")" + std::string(1000, '[') + R"(\"]"})", "strings.json");
  EXPECT_EQ(ok["a"].get<std::string>().size(), 1002u);
}

TEST(ConfigVla, ImageSizesArePlausibleIntegers) {
  const auto dir = scratch_dir("config_image_sizes");
  const auto load = [](const std::string& p) { io::VlaConfig::load(p); };
  const std::vector<std::pair<json, std::string>> cases = {
      {1e300, "1e+300"}, {-224, "-224"}, {224.5, "224.5"}, {0, "0"}, {4097, "4097"},
      {json(std::numeric_limits<uint64_t>::max()), "18446744073709551615"}, {"224", "\"224\""},
  };
  for (const auto& [size, shown] : cases) {
    json j = reference_config();
    j["image_sizes"] = json::array({224, size});
    expect_file_error(dir, "config.json", j, load, {"'image_sizes'", shown, "is not an integer in 1..4096"});
  }
  json j = reference_config();
  j["image_sizes"] = 224;
  expect_file_error(dir, "config.json", j, load, {"'image_sizes'", "expected an array"});
}

// Model sizes are integers within generous bounds (so a typo cannot ask for terabytes), and the
// head counts divide evenly.
TEST(ConfigVla, ModelSizesAreBoundedAndConsistent) {
  const auto dir = scratch_dir("config_sizes");
  const auto load = [](const std::string& p) { io::VlaConfig::load(p); };
  const std::vector<std::tuple<std::string, json, std::vector<std::string>>> cases = {
      {"hidden_size", int64_t{1} << 40, {"'hidden_size'", "1099511627776", "at most 65536"}},
      {"hidden_size", std::numeric_limits<uint64_t>::max(), {"'hidden_size'", "18446744073709551615", "at most"}},
      {"hidden_size", 896.0, {"'hidden_size'", "expected an integer"}},
      {"intermediate_size", int64_t{1} << 40, {"'intermediate_size'", "at most"}},
      {"num_hidden_layers", 100000, {"'num_hidden_layers'", "at most"}},
      {"num_attention_heads", 0, {"'num_attention_heads'", "must be positive"}},
      {"num_attention_heads", 7168, {"'num_attention_heads'", "at most"}},
      {"num_key_value_heads", -2, {"'num_key_value_heads'", "must be positive"}},
      {"vocab_size", int64_t{1} << 40, {"'vocab_size'", "at most"}},
      {"max_position_embeddings", int64_t{1} << 40, {"'max_position_embeddings'", "at most"}},
      {"num_key_value_heads", 28, {"not a multiple of num_key_value_heads"}},
      {"rms_norm_eps", -1.0, {"'rms_norm_eps'", "positive"}},
  };
  for (const auto& [key, value, fragments] : cases) {
    json j = reference_config();
    j["text_config"][key] = value;
    expect_file_error(dir, "config.json", j, load, fragments);
  }
  json j = reference_config();
  j["num_images_in_input"] = 1000;
  expect_file_error(dir, "config.json", j, load, {"'num_images_in_input'", "at most"});
  j = reference_config();
  j["focus"] = {{"top_k", int64_t{1} << 40}};
  expect_file_error(dir, "config.json", j, load, {"focus.top_k", "at most"});
}

// The text configs of the Qwen2.5 0.5B .. 7B releases (their config.json values) pass the bounds.
TEST(ConfigVla, AcceptsQwen25From05BTo7B) {
  struct Sizes {
    int64_t hidden, intermediate, layers, heads, kv_heads, vocab, positions;
  };
  for (const Sizes& s : {Sizes{896, 4864, 24, 14, 2, 151936, 32768}, Sizes{1536, 8960, 28, 12, 2, 151936, 131072},
                         Sizes{2048, 11008, 36, 16, 2, 151936, 32768}, Sizes{3584, 18944, 28, 28, 4, 152064, 131072}}) {
    json j = reference_config();
    auto& t = j["text_config"];
    t["hidden_size"] = s.hidden;
    t["intermediate_size"] = s.intermediate;
    t["num_hidden_layers"] = s.layers;
    t["num_attention_heads"] = s.heads;
    t["num_key_value_heads"] = s.kv_heads;
    t["vocab_size"] = s.vocab;
    t["max_position_embeddings"] = s.positions;
    const auto config = io::VlaConfig::from_json(j, "config.json");
    EXPECT_EQ(config.text_config.hidden_size, s.hidden);
    EXPECT_EQ(config.text_config.max_position_embeddings, s.positions);
  }
}

TEST(ConfigPreprocessor, SizesAndStatisticsAreChecked) {
  const json raw = io::read_json_file(asset_path("vla-adapter-reference/preprocessor_config.json"));
  const std::vector<std::pair<std::function<void(json&)>, std::vector<std::string>>> cases = {
      {[](json& j) { j["input_sizes"][0] = json::array({3, -224, 224}); }, {"'input_sizes'", "-224", "1..4096"}},
      {[](json& j) { j["input_sizes"][1] = json::array({3, 224, int64_t{1} << 40}); }, {"'input_sizes'", "1..4096"}},
      {[](json& j) { j["input_sizes"][1] = json::array({4, 224, 224}); }, {"'input_sizes'", "3 channels"}},
      {[](json& j) { j["tvf_normalize_params"][0]["mean"][1] = std::nan(""); }, {"'mean'", "not a finite number"}},
      {[](json& j) { j["tvf_normalize_params"][1]["std"][2] = HUGE_VAL; }, {"'std'", "not a finite number"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(i);
    json j = raw;
    cases[i].first(j);
    std::vector<std::string> fragments = cases[i].second;
    fragments.push_back("pp.json");
    expect_error_all([&] { io::PreprocessorConfig::from_json(j, "pp.json"); }, fragments);
  }
}

TEST(ConfigStats, NonFiniteAndMismatchedStatisticsAreNamed) {
  const auto dir = scratch_dir("stats_errors");
  const auto load = [](const std::string& p) { io::load_dataset_statistics(p); };
  const json base = {{"libero", reference_config()["norm_stats"]["bridge_orig"]}};
  json j = base;
  j["libero"]["action"]["mean"] = json::array({0.0});
  expect_file_error(dir, "dataset_statistics.json", j, load, {"'libero'", "action", "mean/std/min/max must have 7 entries"});
  j = base;
  j["libero"]["num_transitions"] = -5;
  expect_file_error(dir, "dataset_statistics.json", j, load, {"'num_transitions'", "must not be negative"});
  j = base;
  j["libero"]["action"]["q01"][3] = std::numeric_limits<double>::infinity();
  expect_error([&] { io::parse_norm_stats(j, "stats.json"); }, {"stats.json", "'q01'", "not a finite number"});
  j = base;
  j["libero"]["action"]["q99"][0] = std::nan("");
  expect_error([&] { io::parse_norm_stats(j, "stats.json"); }, {"stats.json", "'q99'", "not a finite number"});
}

TEST(LogLevel, ParsesSetsAndRejects) {
  const LogLevel before = log_level();
  EXPECT_EQ(before, LogLevel::warn);  // quiet by default
  set_log_level(LogLevel::debug);
  EXPECT_EQ(log_level(), LogLevel::debug);
  EXPECT_TRUE(log_enabled(LogLevel::info));
  set_log_level(LogLevel::off);
  EXPECT_FALSE(log_enabled(LogLevel::error));
  set_log_level(before);
  EXPECT_EQ(parse_log_level("trace"), LogLevel::trace);
  EXPECT_EQ(parse_log_level("warning"), LogLevel::warn);
  expect_error([] { parse_log_level("loud"); }, {"'loud'", "unknown"});
}

}  // namespace
}  // namespace focusvla
