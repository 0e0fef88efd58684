#include "focusvla/io/checkpoint.h"

#include <algorithm>
#include <filesystem>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"

namespace focusvla::io {
namespace {

namespace fs = std::filesystem;

bool matches(const std::string& name, const std::string& prefix, const std::string& suffix) {
  return name.size() >= prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The single file in `dir` named prefix*suffix; "" when none, Error when several.
std::string find_one(const fs::path& dir, const std::string& prefix, const std::string& suffix, const std::string& what) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && matches(entry.path().filename().string(), prefix, suffix))
      found.push_back(entry.path().string());
  std::sort(found.begin(), found.end());
  if (found.size() > 1) {
    std::string list;
    for (const auto& f : found) list += "\n  " + f;
    throw Error(dir.string() + ": " + std::to_string(found.size()) + " candidates for the " + what +
                "; keep one:" + list);
  }
  return found.empty() ? "" : found.front();
}

std::string existing(const fs::path& path) { return fs::is_regular_file(path) ? path.string() : ""; }

std::string torch_dtype_name(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return "F32";
    case torch::kFloat16: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kFloat64: return "F64";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kUInt8: return "U8";
    case torch::kBool: return "BOOL";
    default: return c10::toString(t.scalar_type());
  }
}

void add(ComponentSummary& summary, const torch::Tensor& t) {
  summary.tensors += 1;
  summary.parameters += t.numel();
  summary.dtypes[torch_dtype_name(t)] += 1;
}

}  // namespace

CheckpointFiles CheckpointFiles::discover(const std::string& directory) {
  const fs::path dir(directory);
  check(fs::is_directory(dir), directory, "not a directory");
  CheckpointFiles files;
  files.directory = directory;
  files.config = existing(dir / "config.json");
  check(!files.config.empty(), directory, "no config.json (not a checkpoint directory)");
  files.preprocessor_config = existing(dir / "preprocessor_config.json");
  files.dataset_statistics = existing(dir / "dataset_statistics.json");
  const std::string index = existing(dir / "model.safetensors.index.json");
  const std::string single = existing(dir / "model.safetensors");
  check(index.empty() || single.empty(), directory,
        "holds both model.safetensors and model.safetensors.index.json; keep one");
  files.model_weights = index.empty() ? single : index;
  check(!files.model_weights.empty(), directory, "no model.safetensors or model.safetensors.index.json");
  files.action_head = find_one(dir, "action_head--", "checkpoint.pt", "action head");
  files.proprio_projector = find_one(dir, "proprio_projector--", "checkpoint.pt", "proprio projector");
  for (const char* name : {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json",
                           "special_tokens_map.json"}) {
    const std::string path = existing(dir / name);
    if (!path.empty()) files.tokenizer.push_back(path);
  }
  return files;
}

Checkpoint Checkpoint::open(const std::string& directory) {
  Checkpoint ckpt;
  ckpt.files = CheckpointFiles::discover(directory);
  ckpt.config = VlaConfig::load(ckpt.files.config);
  if (!ckpt.files.preprocessor_config.empty())
    ckpt.preprocessor = PreprocessorConfig::load(ckpt.files.preprocessor_config);
  ckpt.norm_stats = ckpt.config.norm_stats;
  if (!ckpt.files.dataset_statistics.empty())
    for (auto& [name, stats] : load_dataset_statistics(ckpt.files.dataset_statistics))
      ckpt.norm_stats[name] = std::move(stats);
  ckpt.model = StateDict::from_safetensors(ckpt.files.model_weights);
  if (!ckpt.files.action_head.empty()) ckpt.action_head = StateDict::from_torch_file(ckpt.files.action_head);
  if (!ckpt.files.proprio_projector.empty())
    ckpt.proprio_projector = StateDict::from_torch_file(ckpt.files.proprio_projector);
  log_info(directory + ": " + std::to_string(ckpt.model.size()) + " model tensors, " +
           std::to_string(ckpt.action_head.size()) + " action-head tensors, " +
           std::to_string(ckpt.proprio_projector.size()) + " proprio-projector tensors");
  return ckpt;
}

std::vector<ComponentSummary> summarize(const Checkpoint& ckpt) {
  std::vector<ComponentSummary> parts = {
      {"vision: DINOv2 (featurizer)", "vision_backbone.featurizer."},
      {"vision: SigLIP (fused_featurizer)", "vision_backbone.fused_featurizer."},
      {"projector", "projector."},
      {"language model", "language_model."},
      {"action queries", "action_queries."},
  };
  ComponentSummary other{"other model tensors", ""};
  for (const auto& name : ckpt.model.keys()) {
    auto it = std::find_if(parts.begin(), parts.end(), [&](const ComponentSummary& p) { return name.rfind(p.prefix, 0) == 0; });
    add(it == parts.end() ? other : *it, ckpt.model.at(name));
  }
  ComponentSummary head{"action head", "model."};
  for (const auto& name : ckpt.action_head.keys()) add(head, ckpt.action_head.at(name));
  ComponentSummary proprio{"proprio projector", ""};
  for (const auto& name : ckpt.proprio_projector.keys()) add(proprio, ckpt.proprio_projector.at(name));
  parts.push_back(head);
  parts.push_back(proprio);
  if (other.tensors > 0) parts.push_back(other);
  return parts;
}

}  // namespace focusvla::io
