// Fuzz target: the checkpoint's JSON files. One input is parsed once (io::parse_json, what every
// reader uses) and handed to each reader in turn, each of which must either accept it or throw
// focusvla::Error:
//   config.json                   VlaConfig::from_json (and Qwen2Config / FocusConfig directly)
//   preprocessor_config.json      PreprocessorConfig::from_json
//   dataset_statistics.json       parse_norm_stats
//   model.safetensors.index.json  SafetensorsIndex::load (through a memfd path: it reads files)
// Seeds are one of each, so the mutations of any of them reach every reader.

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/safetensors.h"
#include "fuzz_util.h"

namespace io = focusvla::io;
using focusvla::fuzz::fail;

namespace {

template <class F>
void expect_error_or_ok(F&& f) {
  try {
    f();
  } catch (const focusvla::Error& e) {
    focusvla::fuzz::rejected(e);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j;
  try {
    j = io::parse_json(text, "fuzz.json");
  } catch (const focusvla::Error& e) {
    focusvla::fuzz::rejected(e);
    return 0;
  }

  expect_error_or_ok([&] {
    const io::VlaConfig c = io::VlaConfig::from_json(j, "config.json");
    if (c.timm_model_ids.size() != (c.use_fused_vision_backbone ? 2u : 1u)) fail("config.json: backbone count");
    const io::Qwen2Config& t = c.text_config;
    if (t.hidden_size <= 0 || t.num_attention_heads <= 0 || t.num_key_value_heads <= 0 ||
        t.hidden_size % t.num_attention_heads != 0 || t.num_attention_heads % t.num_key_value_heads != 0)
      fail("config.json: accepted inconsistent text_config head counts");
    (void)t.head_dim();
    for (const auto& [name, stats] : c.norm_stats)
      if (stats.action.dim() == 0 || stats.action.q99.size() != stats.action.dim())
        fail("config.json: norm_stats['" + name + "'] accepted without q01/q99");
  });
  expect_error_or_ok([&] {
    if (j.is_object() && j.contains("text_config")) (void)io::Qwen2Config::from_json(j["text_config"], "text_config");
  });
  expect_error_or_ok([&] {
    if (j.is_object() && j.contains("focus")) (void)io::FocusConfig::from_json(j["focus"], "focus");
  });
  expect_error_or_ok([&] {
    const io::PreprocessorConfig c = io::PreprocessorConfig::from_json(j, "preprocessor_config.json");
    if (c.backbones.empty()) fail("preprocessor_config.json: accepted with no backbone");
    for (const auto& b : c.backbones)
      for (const double s : b.std)
        if (!(s > 0)) fail("preprocessor_config.json: accepted a non-positive std");
  });
  expect_error_or_ok([&] {
    const io::NormStatsMap stats = io::parse_norm_stats(j, "dataset_statistics.json");
    for (const auto& [name, s] : stats) {
      const size_t dim = s.action.dim();
      if (dim == 0 || s.action.q99.size() != dim || (!s.action.mask.empty() && s.action.mask.size() != dim))
        fail("dataset_statistics.json: '" + name + "' accepted with inconsistent sizes");
    }
  });
  expect_error_or_ok([&] {
    static focusvla::fuzz::MemFile file("model.safetensors.index.json");
    const io::SafetensorsIndex index = io::SafetensorsIndex::load(file.write(text));
    for (const auto& [tensor, shard] : index.weight_map)
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..")
        fail("index: accepted shard file name '" + shard + "'");
  });
  return 0;
}
