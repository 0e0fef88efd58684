#pragma once
// A checkpoint directory in the layout VLA-Adapter releases (SPEC section 2): config.json, the VLM
// weights as one or several safetensors files, the action head and proprio projector as torch.save
// files, preprocessor config, tokenizer files and dataset statistics.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"

namespace focusvla::io {

// Where each part of a checkpoint lives. Optional parts are empty strings.
struct CheckpointFiles {
  std::string directory;
  std::string config;                 // config.json (required)
  std::string preprocessor_config;    // preprocessor_config.json
  std::string dataset_statistics;     // dataset_statistics.json
  std::string model_weights;          // model.safetensors or model.safetensors.index.json (required)
  std::string action_head;            // action_head--*checkpoint.pt
  std::string proprio_projector;      // proprio_projector--*checkpoint.pt
  std::vector<std::string> tokenizer; // vocab.json, merges.txt, tokenizer.json, ... found

  // Finds the files; throws Error for a missing directory, config or weights, and for two
  // candidates of one part (e.g. two action heads).
  static CheckpointFiles discover(const std::string& directory);
};

struct Checkpoint {
  CheckpointFiles files;
  VlaConfig config;
  std::optional<PreprocessorConfig> preprocessor;
  NormStatsMap norm_stats;       // config.json's norm_stats, overridden by dataset_statistics.json
  StateDict model;               // vision_backbone.*, projector.*, language_model.*, action_queries.*
  StateDict action_head;         // model.* (prefix `module.` stripped)
  StateDict proprio_projector;   // fc1.*, fc2.*

  // Reads every part; nothing is copied out of the safetensors mapping.
  static Checkpoint open(const std::string& directory);
};

// One line of `focusvla inspect`: a component, its tensors and parameters.
struct ComponentSummary {
  std::string name;
  std::string prefix;
  size_t tensors = 0;
  int64_t parameters = 0;
  std::map<std::string, size_t> dtypes;  // dtype name -> tensor count
};

// Splits a checkpoint into its components (DINOv2, SigLIP, projector, LLM, action queries, action
// head, proprio projector, anything else) in data-path order.
std::vector<ComponentSummary> summarize(const Checkpoint& checkpoint);

}  // namespace focusvla::io
