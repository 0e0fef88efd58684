#pragma once
// What Policy holds (Policy::Impl), shared by its two halves: policy_load.cpp (load: files to a
// ready Impl) and policy.cpp (run: validate -> stage -> run -> unpack). Internal to the library.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "focusvla/llm/qwen2.h"
#include "focusvla/policy/graph_runner.h"
#include "focusvla/policy/head.h"
#include "focusvla/policy/normalization.h"
#include "focusvla/policy/policy.h"
#include "focusvla/policy/proprio_projector.h"
#include "focusvla/text/bpe_tokenizer.h"
#include "focusvla/text/prompt.h"
#include "focusvla/vision/preprocess.h"
#include "focusvla/vision/vision_tower.h"

namespace focusvla {

// Policy::prepare's product: the staging row of an observation's images, and what it was made
// from (only the policy that made it, and only for the same image tensors, uses it).
struct PreparedImages {
  uint64_t policy = 0;  // Policy::Impl::id of the policy that made them
  std::vector<torch::Tensor> images;
  torch::Tensor staged;  // preprocessor->staging_shape(1, cameras)[0], uint8; pinned with CUDA
};

struct Policy::Impl {
  using Clock = std::chrono::steady_clock;
  using ShapeBuffers = policy::ShapeBuffers;
  using ShapeKey = policy::ShapeKey;
  static double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }
  // Unique per loaded policy in this process (an address could be reused by a later one).
  const uint64_t id = next_id();
  static uint64_t next_id() {
    static std::atomic<uint64_t> next{1};
    return next++;
  }

  PolicyOptions options;   // as requested
  PolicySettings settings;  // as resolved
  torch::ScalarType dtype = torch::kFloat32;
  std::string unnorm_key;
  int64_t num_images = 0;       // 0: the camera count follows each call
  std::string cameras_source;  // where num_images comes from, for errors
  PromptFormat prompt_format = PromptFormat::qwen_chat;
  std::unique_ptr<BpeTokenizer> tokenizer;
  std::unique_ptr<vision::ImagePreprocessor> preprocessor;
  vision::VisionTower vision{nullptr};
  llm::Qwen2Model llm{nullptr};
  torch::Tensor action_queries;  // (64, D)
  torch::Tensor stop_embedding;  // (1, D): the embedding of the stop token that ends the sequence
  std::shared_ptr<policy::PolicyHead> head;  // made by policy::load_head from the checkpoint
  policy::ProprioProjector proprio_projector{nullptr};
  std::optional<policy::Normalizer> action_normalizer, proprio_normalizer;
  int64_t max_positions = 0;
  // The prompts of recent instructions, so an instruction is tokenized once however many calls
  // (and validations: a server validates on its io thread, then acts) repeat it. A robot sends
  // the same instruction every step. Cleared when full; its own lock (prompt() takes no other).
  static constexpr size_t kPromptCacheSize = 64;
  mutable std::mutex prompt_mutex;
  mutable std::unordered_map<std::string, PromptText> prompt_cache;
  mutable std::mutex mutex;
  mutable std::unique_ptr<policy::GraphRunner> runner;
  std::vector<int64_t> batch_buckets;  // policy/batch_buckets.h
  bool tapped = false;
  Tap tap;                    // the Policy-wide tap (set_tap)
  Tap active_tap;             // what the components call now: `tap`, plus a call's own (act_traced)
  Intervention intervention;  // act_traced's, for that call only

  // Installs `t` in every component (prefixed with its path) and as the policy-level tap.
  void install_tap(const Tap& t);
  // The policy-level named intermediates, then the intervention at that point.
  torch::Tensor hook(const std::string& name, const torch::Tensor& value) const;

  // One call: validate -> stage -> run -> unpack.
  std::vector<ActionChunk> run(const std::vector<Observation>& batch) const;
  PromptText prompt(const std::string& instruction) const;  // cached (prompt_cache)
  PromptText make_prompt(const std::string& instruction) const;
  struct Validated {
    ShapeKey key;                           // key.batch: the bucket it runs at (>= rows)
    int64_t rows = 0;                       // the call's observations
    std::vector<std::vector<int64_t>> ids;  // each sample's prompt token ids
  };
  Validated validate(const std::vector<Observation>& batch) const;
  // With batch buckets, the call's rows in a canonical order: longest prompt first (stable), so
  // that the same prompts in another order are the same shape (one CUDA graph, not one per
  // order). Returns the order (call row of each staged row); empty when it stays as given.
  std::vector<size_t> sort_rows(Validated& v) const;
  // The call padded to its batch bucket: the added rows repeat the last observation's shape.
  void pad_to_bucket(Validated& v) const;
  // The staging row `observation` prepared by this policy for these very images, or null.
  const PreparedImages* prepared_for(const Observation& observation) const;

 private:
  int64_t call_cameras(const std::vector<Observation>& batch) const;
  ShapeBuffers& stage(const std::vector<Observation>& batch, const Validated& v) const;
  void allocate(const ShapeKey& key, ShapeBuffers& b) const;
  void forward(ShapeBuffers& b, const ShapeKey& key, StageTimer* timer) const;
  std::vector<ActionChunk> unpack(const ShapeBuffers& b, int64_t rows, const policy::GraphRunner::Result& result,
                                  double host_ms, Clock::time_point start) const;
};

}  // namespace focusvla
