#include "focusvla/policy/policy.h"

#include <chrono>
#include <cmath>
#include <mutex>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/io/checkpoint.h"
#include "focusvla/llm/qwen2.h"
#include "focusvla/policy/action_head.h"
#include "focusvla/policy/proprio_projector.h"
#include "focusvla/text/bpe_tokenizer.h"
#include "focusvla/text/prompt.h"
#include "focusvla/vision/preprocess.h"
#include "focusvla/vision/vision_tower.h"

namespace focusvla {
namespace {

using Clock = std::chrono::steady_clock;

// The action-query placeholder and stop token ids the reference appends (SPEC 6).
constexpr int64_t kPlaceholderId = 1;
constexpr int64_t kStopId = 2;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// low / high of the chosen normalization for one quantity.
struct Bounds {
  std::vector<double> low, high;
  std::vector<bool> mask;
};

Bounds bounds_of(const io::NormStats& stats, const std::string& normalization, const std::string& what) {
  Bounds b;
  if (normalization == "bounds_q99") {
    b.low = stats.q01;
    b.high = stats.q99;
  } else {
    check(!stats.min.empty() && !stats.max.empty(), what, "has no min/max for 'bounds' normalization");
    b.low = stats.min;
    b.high = stats.max;
  }
  b.mask = stats.mask.empty() ? std::vector<bool>(b.low.size(), true) : stats.mask;
  return b;
}

}  // namespace

struct Policy::Impl {
  PolicyOptions options;
  std::string unnorm_key;
  int64_t num_images = 0;
  PromptFormat prompt_format = PromptFormat::openvla;
  std::unique_ptr<BpeTokenizer> tokenizer;
  std::unique_ptr<vision::ImagePreprocessor> preprocessor;
  vision::VisionTower vision{nullptr};
  llm::Qwen2Model llm{nullptr};
  torch::Tensor action_queries;  // (64, D)
  policy::ActionHead head{nullptr};
  policy::ProprioProjector proprio_projector{nullptr};
  Bounds action_bounds;
  std::optional<Bounds> proprio_bounds;
  int64_t max_positions = 0;
  mutable std::mutex mutex;

  std::vector<int64_t> prompt_ids(const std::string& instruction) const;
  torch::Tensor proprio_token(const std::vector<std::vector<double>>& proprio) const;
  std::vector<ActionChunk> run(const std::vector<Observation>& batch) const;
  ActionChunk unnormalize(const torch::Tensor& normalized) const;
};

std::vector<int64_t> Policy::Impl::prompt_ids(const std::string& instruction) const {
  bool blank = true;
  for (char c : instruction) blank = blank && std::isspace(static_cast<unsigned char>(c));
  check(!blank, "instruction", "is empty");
  const auto ids32 = tokenizer->encode(build_prompt(prompt_format, instruction));
  check(!ids32.empty(), "instruction", "tokenizes to nothing");
  return std::vector<int64_t>(ids32.begin(), ids32.end());
}

// Raw proprio vectors (B of P) -> normalized (SPEC 10) -> projected tokens (B, 1, D).
torch::Tensor Policy::Impl::proprio_token(const std::vector<std::vector<double>>& proprio) const {
  const int64_t dim = proprio_projector->proprio_dim();
  const auto batch = static_cast<int64_t>(proprio.size());
  torch::Tensor normalized = torch::empty({batch, dim}, torch::kFloat32);
  auto* out = normalized.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < dim; ++i) {
      const double x = proprio[b][i];
      const auto& p = *proprio_bounds;
      const double n = p.mask[i] ? std::clamp(2 * (x - p.low[i]) / (p.high[i] - p.low[i] + 1e-8) - 1, -1.0, 1.0)
                                 : std::clamp(x, -1.0, 1.0);
      out[b * dim + i] = static_cast<float>(n);
    }
  }
  return proprio_projector->forward(normalized.to(options.device)).unsqueeze(1);
}

ActionChunk Policy::Impl::unnormalize(const torch::Tensor& normalized) const {
  const torch::Tensor n = normalized.to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t rows = n.size(0), cols = n.size(1);
  ActionChunk chunk;
  chunk.normalized = Eigen::Map<const ActionChunk::Matrix>(n.data_ptr<double>(), rows, cols);
  chunk.actions = chunk.normalized;
  const auto& a = action_bounds;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (a.mask[c]) chunk.actions(r, c) = 0.5 * (chunk.normalized(r, c) + 1) * (a.high[c] - a.low[c] + 1e-8) + a.low[c];
  return chunk;
}

std::vector<ActionChunk> Policy::Impl::run(const std::vector<Observation>& batch) const {
  check(!batch.empty(), "act_batch", "no observations");
  const c10::InferenceMode inference;
  const auto start = Clock::now();
  const auto batch_size = static_cast<int64_t>(batch.size());

  // Validate everything before any work.
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<double>> proprio;
  for (size_t b = 0; b < batch.size(); ++b) {
    const Observation& obs = batch[b];
    const std::string which = batch.size() > 1 ? "observation " + std::to_string(b) + ": " : "";
    check(static_cast<int64_t>(obs.images.size()) == num_images, which + "images",
          "got " + std::to_string(obs.images.size()) + " camera image(s), the checkpoint takes " +
              std::to_string(num_images));
    ids.push_back(prompt_ids(obs.instruction));
    if (proprio_projector) {
      const int64_t dim = proprio_projector->proprio_dim();
      check(static_cast<int64_t>(obs.proprio.size()) == dim, which + "proprio",
            "has " + std::to_string(obs.proprio.size()) + " values, the proprio projector takes " + std::to_string(dim));
      for (size_t i = 0; i < obs.proprio.size(); ++i)
        check(std::isfinite(obs.proprio[i]), which + "proprio", "value " + std::to_string(i) + " is not finite");
      proprio.push_back(obs.proprio);
    } else {
      check(obs.proprio.empty(), which + "proprio", "given, but this checkpoint has no proprio projector");
    }
  }

  // Images -> pixels (B, N, 6, S, S).
  std::vector<std::vector<torch::Tensor>> images;
  for (const auto& obs : batch) images.push_back(obs.images);
  const torch::Tensor pixels = preprocessor->batch(images).to(options.device, options.dtype);
  StageTiming timing;
  timing.preprocess_ms = ms_since(start);

  auto stage = Clock::now();
  const torch::Tensor visual = vision->forward(pixels);  // (B, Nv, D)
  const int64_t nv = visual.size(1);
  const int64_t dim = visual.size(2);
  timing.vision_ms = ms_since(stage);

  // Sequences [t_0] + visual + [t_1 ..] + queries + [stop], right-padded (SPEC 6, 11).
  stage = Clock::now();
  const int64_t nq = action_queries.size(0);
  std::vector<int64_t> lengths;
  for (const auto& t : ids) lengths.push_back(nv + static_cast<int64_t>(t.size()) + nq + 1);
  const int64_t length = *std::max_element(lengths.begin(), lengths.end());
  check(length <= max_positions, "instruction",
        "the sequence is " + std::to_string(length) + " positions long (" + std::to_string(nv) + " visual, " +
            std::to_string(nq) + " queries, prompt), over the model's limit of " + std::to_string(max_positions));
  torch::Tensor embeds = torch::zeros({batch_size, length, dim}, visual.options());
  for (int64_t b = 0; b < batch_size; ++b) {
    const auto& t = ids[b];
    const auto p = static_cast<int64_t>(t.size());
    const torch::Tensor text = llm->embed(torch::tensor(t, torch::kInt64).to(options.device));  // (P, D)
    const torch::Tensor stop = llm->embed(torch::tensor({kStopId}, torch::kInt64).to(options.device));
    torch::Tensor row = embeds[b];
    row.slice(0, 0, 1).copy_(text.slice(0, 0, 1));
    row.slice(0, 1, 1 + nv).copy_(visual[b]);
    row.slice(0, 1 + nv, nv + p).copy_(text.slice(0, 1, p));
    row.slice(0, nv + p, nv + p + nq).copy_(action_queries);
    row.slice(0, nv + p + nq, nv + p + nq + 1).copy_(stop);
  }
  (void)kPlaceholderId;  // the placeholders' embeddings are replaced by the action queries
  const torch::Tensor hidden = llm->forward(embeds, batch_size > 1 ? lengths : std::vector<int64_t>{});  // (25, B, L, D)

  // Conditioning, one position before each token (SPEC 8): visual states at 0 .. Nv-1, query
  // states at q0-1 .. q0+Nq-2 with q0 = Nv + P the first placeholder.
  const torch::Tensor visual_states = hidden.slice(2, 0, nv).permute({1, 0, 2, 3});  // (B, 25, Nv, D)
  std::vector<torch::Tensor> query_states;
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t q0 = nv + static_cast<int64_t>(ids[b].size());
    query_states.push_back(hidden.select(1, b).slice(1, q0 - 1, q0 - 1 + nq));  // (25, Nq, D)
  }
  const torch::Tensor queries = torch::stack(query_states);  // (B, 25, Nq, D)
  timing.llm_ms = ms_since(stage);

  stage = Clock::now();
  const torch::Tensor p = proprio_projector ? proprio_token(proprio) : torch::Tensor();
  policy::HeadDiagnostics diagnostics;
  const torch::Tensor normalized = head->forward(visual_states, queries, p, options.diagnostics ? &diagnostics : nullptr);
  const torch::Tensor host = normalized.to(torch::kCPU, torch::kFloat64);  // the one host sync
  timing.head_ms = ms_since(stage);
  timing.total_ms = ms_since(start);

  std::vector<ActionChunk> out;
  for (int64_t b = 0; b < batch_size; ++b) {
    ActionChunk chunk = unnormalize(host[b]);
    chunk.timing = timing;
    for (const auto& k : diagnostics.kept_indices) chunk.kept_indices.push_back(k[b].cpu());
    for (const auto& g : diagnostics.gates) chunk.gates.push_back(g.dim() > 0 && g.size(0) == batch_size ? g[b].cpu() : g.cpu());
    out.push_back(std::move(chunk));
  }
  return out;
}

Policy Policy::load(const std::string& directory, const PolicyOptions& options) {
  auto impl = std::make_shared<Impl>();
  impl->options = options;
  if (options.threads > 0) torch::set_num_threads(options.threads);
  impl->prompt_format = parse_prompt_format(options.prompt_format);
  check(options.normalization == "bounds_q99" || options.normalization == "bounds", "PolicyOptions::normalization",
        "'" + options.normalization + "' is not 'bounds_q99' or 'bounds'");
  check(options.dtype == torch::kFloat32 || options.dtype == torch::kBFloat16 || options.dtype == torch::kFloat16,
        "PolicyOptions::dtype", "must be float32, bfloat16 or float16");

  const io::Checkpoint ckpt = io::Checkpoint::open(directory);
  check(!ckpt.files.action_head.empty(), directory, "no action head (action_head--*checkpoint.pt)");
  check(ckpt.preprocessor.has_value(), directory, "no preprocessor_config.json");

  // Statistics: the unnorm_key must name one dataset; with one dataset it may be left out.
  std::string keys;
  for (const auto& kv : ckpt.norm_stats) keys += (keys.empty() ? "" : ", ") + kv.first;
  if (options.unnorm_key.empty()) {
    check(ckpt.norm_stats.size() == 1, directory,
          "holds statistics of " + std::to_string(ckpt.norm_stats.size()) +
              " datasets; set PolicyOptions::unnorm_key to one of: " + keys);
    impl->unnorm_key = ckpt.norm_stats.begin()->first;
  } else {
    check(ckpt.norm_stats.count(options.unnorm_key) != 0, "unnorm_key '" + options.unnorm_key + "'",
          "not in the checkpoint's statistics; choose one of: " + keys);
    impl->unnorm_key = options.unnorm_key;
  }
  const io::DatasetStats& stats = ckpt.norm_stats.at(impl->unnorm_key);
  impl->action_bounds = bounds_of(stats.action, options.normalization, impl->unnorm_key + " action statistics");

  impl->num_images = options.num_images > 0 ? options.num_images : ckpt.config.num_images_in_input;
  check(impl->num_images > 0, directory,
        "config.json has no num_images_in_input: set PolicyOptions::num_images to the camera count the policy was "
        "trained with");

  const auto tensor_options = torch::TensorOptions().dtype(options.dtype).device(options.device);
  impl->tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::from_directory(directory));
  vision::PreprocessOptions pre;
  pre.center_crop = options.center_crop;
  pre.libero_resize = options.center_crop;
  pre.device = options.device;
  impl->preprocessor = std::make_unique<vision::ImagePreprocessor>(*ckpt.preprocessor, pre);
  impl->vision = vision::VisionTower::load(ckpt.model, ckpt.config, tensor_options);
  impl->llm = llm::load_qwen2(ckpt.model, ckpt.config.text_config, tensor_options);
  impl->max_positions = ckpt.config.text_config.max_position_embeddings;
  const torch::Tensor& queries = ckpt.model.at("action_queries.weight");
  check(queries.dim() == 2 && queries.size(1) == ckpt.config.text_config.hidden_size, "action_queries.weight",
        "expected (N, " + std::to_string(ckpt.config.text_config.hidden_size) + "), found " + io::shape_string(queries.sizes()));
  impl->action_queries = queries.to(tensor_options).clone();
  impl->head = policy::ActionHeadImpl::load(ckpt.action_head, ckpt.config.focus, tensor_options);
  check(impl->head->config().action_dim == static_cast<int64_t>(impl->action_bounds.low.size()), directory,
        "the action head predicts " + std::to_string(impl->head->config().action_dim) + " dims but '" +
            impl->unnorm_key + "' has statistics for " + std::to_string(impl->action_bounds.low.size()));
  if (!ckpt.files.proprio_projector.empty()) {
    impl->proprio_projector = policy::ProprioProjectorImpl::load(ckpt.proprio_projector, tensor_options);
    check(stats.proprio.has_value(), impl->unnorm_key, "has no proprio statistics but the checkpoint has a proprio projector");
    impl->proprio_bounds = bounds_of(*stats.proprio, options.normalization, impl->unnorm_key + " proprio statistics");
    check(static_cast<int64_t>(impl->proprio_bounds->low.size()) == impl->proprio_projector->proprio_dim(),
          impl->unnorm_key + " proprio statistics",
          "have " + std::to_string(impl->proprio_bounds->low.size()) + " dims, the projector takes " +
              std::to_string(impl->proprio_projector->proprio_dim()));
  }
  log_info(directory + ": loaded (" + impl->unnorm_key + ", " + std::to_string(impl->num_images) + " camera(s))");
  return Policy(impl);
}

ActionChunk Policy::act(const std::vector<torch::Tensor>& images, const std::string& instruction,
                        const std::vector<double>& proprio) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->run({Observation{images, instruction, proprio}}).front();
}

std::vector<ActionChunk> Policy::act_batch(const std::vector<Observation>& batch) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->run(batch);
}

int64_t Policy::num_images() const { return impl_->num_images; }
int64_t Policy::chunk_size() const { return impl_->head->config().chunk; }
int64_t Policy::action_dim() const { return impl_->head->config().action_dim; }
int64_t Policy::proprio_dim() const { return impl_->proprio_projector ? impl_->proprio_projector->proprio_dim() : 0; }
std::string Policy::head_kind() const {
  switch (impl_->head->config().kind) {
    case policy::HeadKind::base: return "vla-adapter";
    case policy::HeadKind::pro: return "vla-adapter-pro";
    case policy::HeadKind::focus: return "focusvla";
  }
  return "?";
}
const std::string& Policy::unnorm_key() const { return impl_->unnorm_key; }
const PolicyOptions& Policy::options() const { return impl_->options; }

}  // namespace focusvla
