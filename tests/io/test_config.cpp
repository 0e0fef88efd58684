// Typed config readers against the real released config files (assets/vla-adapter-reference),
// and their errors. Torch-free: also runs in the AddressSanitizer build.

#include <gtest/gtest.h>

#include <fstream>
#include <functional>

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
  EXPECT_EQ(config.focus->attention, "mixed");
  EXPECT_EQ(config.focus->top_k, 0);
  EXPECT_EQ(config.focus->gate, "head");
  EXPECT_EQ(config.focus->value_source, "layer");
  raw["focus"] = json::object();
  const auto defaults = io::VlaConfig::from_json(raw, "config.json");
  EXPECT_EQ(defaults.focus->attention, "cascaded");
  EXPECT_EQ(defaults.focus->top_k, 256);
  EXPECT_EQ(defaults.focus->gate, "element");
  EXPECT_EQ(defaults.focus->value_source, "embeddings");
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
