#include "focusvla/policy/policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>

#include "focusvla/core/cuda_graph.h"
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

// The stop token id the reference appends (SPEC 6). The action-query placeholders (id 1) need no
// lookup: their embeddings are replaced by the action queries.
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

// The prompt format the reference evaluates this checkpoint with (SPEC 6): get_vla_action uses
// the Qwen chat template whenever the backbone is the Qwen2.5 mini-VLM (use_minivlm=True, the
// default of its LIBERO and CALVIN evaluations) and `In: ... Out:` for the OpenVLA backbones.
std::pair<PromptFormat, std::string> resolve_prompt_format(const std::string& requested, const io::VlaConfig& config) {
  if (requested != "auto") return {parse_prompt_format(requested), "option"};
  const std::string& backbone = config.llm_backbone_id;
  if (backbone.empty()) return {PromptFormat::qwen_chat, "checkpoint: Qwen2 text_config (no llm_backbone_id)"};
  const bool qwen = backbone.rfind("qwen", 0) == 0;
  return {qwen ? PromptFormat::qwen_chat : PromptFormat::openvla, "checkpoint: llm_backbone_id " + backbone};
}

std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return c10::toString(dtype);
  }
}

// The checkpoint's dtype (its decoder weights' as stored: config.json's torch_dtype says bf16
// whatever the weights are) where the device computes it natively, float32 elsewhere.
std::pair<torch::ScalarType, std::string> resolve_dtype(const std::optional<torch::ScalarType>& requested,
                                                         const io::StateDict& model, const torch::Device& device) {
  if (requested) return {*requested, "option"};
  const std::string key = "language_model.model.embed_tokens.weight";
  check(model.contains(key), key, "missing from the checkpoint's weights");
  const torch::ScalarType stored = model.at(key).scalar_type();
  const std::string checkpoint = "checkpoint " + dtype_name(stored);
  if (stored != torch::kBFloat16 && stored != torch::kFloat16) return {torch::kFloat32, checkpoint};
  if (device.is_cuda()) return {stored, checkpoint + " on CUDA"};
  if (stored == torch::kBFloat16 && llm::cpu_has_native_bf16()) return {stored, checkpoint + ", CPU with native bf16"};
  return {torch::kFloat32, checkpoint + ", float32 on a CPU without native " + dtype_name(stored)};
}

}  // namespace

// The buffers of one input shape, allocated on its first call and reused by every later call of
// that shape (no per-call allocation of activations, fixed addresses for a CUDA graph).
struct Workspace {
  struct Key {
    int64_t batch = 0, cameras = 0;
    std::vector<int64_t> prompt_lengths;  // token count of each sample's prompt
    bool operator==(const Key& o) const {
      return batch == o.batch && cameras == o.cameras && prompt_lengths == o.prompt_lengths;
    }
  };
  Key key;
  std::vector<int64_t> lengths;  // full sequence length of each sample
  torch::Tensor staging;         // (B, N, 2, S, S, 3) uint8 on the host (pinned with CUDA)
  torch::Tensor images;          // the same on the device (the staging buffer itself on the CPU)
  torch::Tensor ids_host, ids;   // (B, longest prompt) int64 prompt token ids, right-padded with 0
  torch::Tensor proprio_host, proprio;  // (B, P) float32, normalized
  llm::AttentionMask mask;       // padding mask of a right-padded batch (causal only otherwise)
  torch::Tensor hidden;          // (layers + 1, B, L, D); hidden[0] holds the input embeddings
  torch::Tensor output;          // (B, chunk, action_dim) float32 on the device
  torch::Tensor output_host;     // the same on the host (pinned with CUDA)
  policy::HeadDiagnostics diagnostics;
  std::unique_ptr<StageTimer> timer;  // its CUDA events are made on the first call, then reused
  std::unique_ptr<CudaGraph> graph;
  bool graph_failed = false;
  int64_t runs = 0;
  uint64_t last_use = 0;
};

struct Policy::Impl {
  PolicyOptions options;   // as requested
  PolicySettings settings;  // as resolved
  torch::ScalarType dtype = torch::kFloat32;
  std::string unnorm_key;
  int64_t num_images = 0;
  std::string cameras_source;  // where num_images comes from, for errors
  PromptFormat prompt_format = PromptFormat::qwen_chat;
  std::unique_ptr<BpeTokenizer> tokenizer;
  std::unique_ptr<vision::ImagePreprocessor> preprocessor;
  vision::VisionTower vision{nullptr};
  llm::Qwen2Model llm{nullptr};
  torch::Tensor action_queries;  // (64, D)
  torch::Tensor stop_embedding;  // (1, D): the embedding of the stop token that ends the sequence
  policy::ActionHead head{nullptr};
  policy::ProprioProjector proprio_projector{nullptr};
  Bounds action_bounds;
  std::optional<Bounds> proprio_bounds;
  int64_t max_positions = 0;
  mutable std::mutex mutex;
  mutable std::vector<std::unique_ptr<Workspace>> workspaces;
  mutable uint64_t calls = 0;
  mutable std::string last_execution = "none";

  PromptText prompt(const std::string& instruction) const;
  void normalize_proprio(const std::vector<double>& raw, float* out) const;
  Workspace& workspace(const Workspace::Key& key) const;
  void forward(Workspace& w, StageTimer* timer) const;
  std::vector<ActionChunk> run(const std::vector<Observation>& batch) const;
  ActionChunk unnormalize(const torch::Tensor& normalized) const;
};

PromptText Policy::Impl::prompt(const std::string& instruction) const {
  bool blank = true;
  for (char c : instruction) blank = blank && std::isspace(static_cast<unsigned char>(c));
  check(!blank, "instruction", "is empty");
  PromptText out;
  try {
    out.text = build_prompt(prompt_format, instruction);
  } catch (const Error& e) {
    throw Error(std::string("instruction: ") + e.what());
  }
  const auto ids32 = tokenizer->encode(out.text);
  check(!ids32.empty(), "instruction", "tokenizes to nothing");
  const int64_t rows = llm->embed_tokens->weight.size(0);
  for (const int32_t id : ids32)
    check(id >= 0 && id < rows, "instruction",
          "token id " + std::to_string(id) + " is outside the embedding table [0, " + std::to_string(rows) + ")");
  out.ids.assign(ids32.begin(), ids32.end());
  return out;
}

// Raw proprio (P) -> normalized to [-1, 1] with the dataset's bounds (SPEC 10).
void Policy::Impl::normalize_proprio(const std::vector<double>& raw, float* out) const {
  const auto& p = *proprio_bounds;
  for (size_t i = 0; i < raw.size(); ++i) {
    const double x = raw[i];
    const double n = p.mask[i] ? std::clamp(2 * (x - p.low[i]) / (p.high[i] - p.low[i] + 1e-8) - 1, -1.0, 1.0)
                               : std::clamp(x, -1.0, 1.0);
    out[i] = static_cast<float>(n);
  }
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

Workspace& Policy::Impl::workspace(const Workspace::Key& key) const {
  ++calls;
  for (auto& w : workspaces) {
    if (w->key == key) {
      w->last_use = calls;
      return *w;
    }
  }
  if (static_cast<int64_t>(workspaces.size()) >= std::max(1, options.max_cached_shapes)) {
    const auto lru = std::min_element(workspaces.begin(), workspaces.end(),
                                      [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    workspaces.erase(lru);
  }
  auto w = std::make_unique<Workspace>();
  w->key = key;
  w->last_use = calls;
  const torch::Device device = options.device;
  const bool cuda = device.is_cuda();
  const auto host = torch::TensorOptions().pinned_memory(cuda);
  const int64_t b = key.batch, size = preprocessor->image_size();
  const int64_t nv = key.cameras * vision->config.tokens_per_image();
  const int64_t nq = action_queries.size(0);
  for (const int64_t p : key.prompt_lengths) w->lengths.push_back(nv + p + nq + 1);
  const int64_t length = *std::max_element(w->lengths.begin(), w->lengths.end());
  const int64_t longest_prompt = *std::max_element(key.prompt_lengths.begin(), key.prompt_lengths.end());

  w->staging = torch::empty({b, key.cameras, 2, size, size, 3}, host.dtype(torch::kUInt8));
  w->images = cuda ? torch::empty(w->staging.sizes(), w->staging.options().device(device).pinned_memory(false)) : w->staging;
  w->ids_host = torch::zeros({b, longest_prompt}, host.dtype(torch::kInt64));
  w->ids = cuda ? torch::zeros(w->ids_host.sizes(), torch::TensorOptions(torch::kInt64).device(device)) : w->ids_host;
  if (proprio_projector) {
    w->proprio_host = torch::zeros({b, proprio_projector->proprio_dim()}, host.dtype(torch::kFloat32));
    w->proprio = cuda ? torch::zeros(w->proprio_host.sizes(), torch::TensorOptions(torch::kFloat32).device(device))
                      : w->proprio_host;
  }
  w->mask = llm->attention_mask(b, length, b > 1 ? w->lengths : std::vector<int64_t>{});
  // Zeros: the padding of shorter samples stays finite (it is never written).
  w->hidden = torch::zeros({llm->num_layers() + 1, b, length, llm->config().hidden_size},
                           torch::TensorOptions(dtype).device(device));
  const auto& head_config = head->config();
  w->output = torch::empty({b, head_config.chunk, head_config.action_dim}, torch::TensorOptions(torch::kFloat32).device(device));
  w->output_host = cuda ? torch::empty(w->output.sizes(), host.dtype(torch::kFloat32)) : w->output;
  w->timer = std::make_unique<StageTimer>(device);
  workspaces.push_back(std::move(w));
  return *workspaces.back();
}

// The device half of one call, from the staged inputs in `w` to w.output: only device work, so
// that it can be captured as a CUDA graph (no host reads, no pageable copies, fixed shapes).
void Policy::Impl::forward(Workspace& w, StageTimer* timer) const {
  const auto mark = [&] {
    if (timer != nullptr) timer->mark();
  };
  const torch::Tensor pixels = preprocessor->normalize(w.images, dtype);  // (B, N, 6, S, S)
  mark();
  const torch::Tensor features = vision->features(pixels);  // (B, Nv, 2176)
  mark();
  const torch::Tensor visual = vision->projector->forward(features);  // (B, Nv, D)
  mark();

  // Sequences [t_0] + visual + [t_1 ..] + queries + [stop], right-padded (SPEC 6, 11), written
  // straight into hidden[0].
  const int64_t nv = visual.size(1);
  const int64_t nq = action_queries.size(0);
  torch::Tensor embeds = w.hidden.select(0, 0);
  for (int64_t b = 0; b < w.key.batch; ++b) {
    const int64_t p = w.key.prompt_lengths[static_cast<size_t>(b)];
    const torch::Tensor text = llm->embed_tokens->lookup(w.ids[b].narrow(0, 0, p));  // (P, D)
    torch::Tensor row = embeds[b];
    row.narrow(0, 0, 1).copy_(text.narrow(0, 0, 1));
    row.narrow(0, 1, nv).copy_(visual[b]);
    row.narrow(0, 1 + nv, p - 1).copy_(text.narrow(0, 1, p - 1));
    row.narrow(0, nv + p, nq).copy_(action_queries);
    row.narrow(0, nv + p + nq, 1).copy_(stop_embedding);
  }
  llm->forward_into(w.hidden, embeds, w.mask);  // (25, B, L, D)

  // Conditioning, one position before each token (SPEC 8): visual states at 0 .. Nv-1, query
  // states at q0-1 .. q0+Nq-2 with q0 = Nv + P the first placeholder.
  const torch::Tensor visual_states = w.hidden.narrow(2, 0, nv).permute({1, 0, 2, 3});  // (B, 25, Nv, D)
  std::vector<torch::Tensor> query_states;
  for (int64_t b = 0; b < w.key.batch; ++b) {
    const int64_t q0 = nv + w.key.prompt_lengths[static_cast<size_t>(b)];
    query_states.push_back(w.hidden.select(1, b).narrow(1, q0 - 1, nq));  // (25, Nq, D)
  }
  const torch::Tensor queries = torch::stack(query_states);  // (B, 25, Nq, D)
  mark();

  const torch::Tensor p = proprio_projector ? proprio_projector->forward(w.proprio).unsqueeze(1) : torch::Tensor();
  const torch::Tensor normalized = head->forward(visual_states, queries, p, options.diagnostics ? &w.diagnostics : nullptr);
  w.output.copy_(normalized);
}

std::vector<ActionChunk> Policy::Impl::run(const std::vector<Observation>& batch) const {
  check(!batch.empty(), "act_batch", "no observations");
  const c10::InferenceMode inference;
  const auto start = Clock::now();
  const auto batch_size = static_cast<int64_t>(batch.size());

  // Validate everything before any work.
  std::vector<std::vector<int64_t>> ids;
  Workspace::Key key;
  key.batch = batch_size;
  key.cameras = num_images;
  for (size_t b = 0; b < batch.size(); ++b) {
    const Observation& obs = batch[b];
    const std::string which = batch.size() > 1 ? "observation " + std::to_string(b) + ": " : "";
    check(static_cast<int64_t>(obs.images.size()) == num_images, which + "images",
          "got " + std::to_string(obs.images.size()) + " camera image(s), the policy takes " +
              std::to_string(num_images) + " (" + cameras_source + ")");
    for (size_t i = 0; i < obs.images.size(); ++i)
      vision::check_images(obs.images[i], which + "image " + std::to_string(i));
    ids.push_back(prompt(obs.instruction).ids);
    key.prompt_lengths.push_back(static_cast<int64_t>(ids.back().size()));
    if (proprio_projector) {
      const int64_t dim = proprio_projector->proprio_dim();
      check(static_cast<int64_t>(obs.proprio.size()) == dim, which + "proprio",
            "has " + std::to_string(obs.proprio.size()) + " values, the proprio projector takes " + std::to_string(dim));
      for (size_t i = 0; i < obs.proprio.size(); ++i)
        check(std::isfinite(obs.proprio[i]), which + "proprio", "value " + std::to_string(i) + " is not finite");
    } else {
      check(obs.proprio.empty(), which + "proprio", "given, but this checkpoint has no proprio projector");
    }
  }
  const int64_t nv = num_images * vision->config.tokens_per_image();
  for (size_t b = 0; b < ids.size(); ++b) {
    const int64_t length = nv + static_cast<int64_t>(ids[b].size()) + action_queries.size(0) + 1;
    check(length <= max_positions, "instruction",
          "the sequence is " + std::to_string(length) + " positions long (" + std::to_string(nv) + " visual, " +
              std::to_string(action_queries.size(0)) + " queries, prompt), over the model's limit of " +
              std::to_string(max_positions));
  }

  // Host half: images (LIBERO steps, Pillow resize), token ids and proprio into the staging
  // buffers, then one asynchronous upload each.
  Workspace& w = workspace(key);
  for (int64_t b = 0; b < batch_size; ++b) {
    preprocessor->stage(batch[static_cast<size_t>(b)].images, w.staging[b]);
    auto* row = w.ids_host[b].data_ptr<int64_t>();
    std::copy(ids[static_cast<size_t>(b)].begin(), ids[static_cast<size_t>(b)].end(), row);
    if (proprio_projector) normalize_proprio(batch[static_cast<size_t>(b)].proprio, w.proprio_host[b].data_ptr<float>());
  }
  const bool cuda = options.device.is_cuda();
  if (cuda) {
    w.images.copy_(w.staging, /*non_blocking=*/true);
    w.ids.copy_(w.ids_host, /*non_blocking=*/true);
    if (proprio_projector) w.proprio.copy_(w.proprio_host, /*non_blocking=*/true);
  }
  const double host_ms = ms_since(start);

  // Device half: eager on the first call of a shape (and always on the CPU), captured as a CUDA
  // graph on the second, replayed from then on.
  StageTimer& timer = *w.timer;
  timer.restart();
  timer.mark();
  bool replayed = false;
  if (cuda && options.cuda_graphs && !w.graph_failed && w.runs >= 1) {
    if (!w.graph) {
      auto graph = std::make_unique<CudaGraph>(options.device);
      try {
        graph->capture([&] { forward(w, nullptr); });
        w.graph = std::move(graph);
      } catch (const Error& e) {
        w.graph_failed = true;
        log_warn(std::string("act: CUDA graph capture failed for this input shape, running it eagerly: ") + e.what());
      }
    }
    if (w.graph) {
      w.graph->replay();
      replayed = true;
    }
  }
  if (!replayed) forward(w, &timer);
  ++w.runs;
  if (cuda) w.output_host.copy_(w.output, /*non_blocking=*/true);
  timer.mark();
  synchronize_stream(options.device);  // the one wait for the device
  last_execution = !cuda ? "cpu" : replayed ? "cuda-graph" : "cuda-eager";

  StageTiming timing;
  const std::vector<double> stages = timer.intervals_ms();
  timing.cuda_graph = replayed;
  timing.total_ms = ms_since(start);
  for (const double ms : stages) timing.device_ms += ms;
  if (replayed) {
    timing.preprocess_ms = host_ms;
    timing.vision_ms = timing.projector_ms = timing.llm_ms = timing.head_ms = std::numeric_limits<double>::quiet_NaN();
  } else {
    timing.preprocess_ms = host_ms + stages.at(0);
    timing.vision_ms = stages.at(1);
    timing.projector_ms = stages.at(2);
    timing.llm_ms = stages.at(3);
    timing.head_ms = stages.at(4);
  }

  std::vector<ActionChunk> out;
  for (int64_t b = 0; b < batch_size; ++b) {
    ActionChunk chunk = unnormalize(w.output_host[b]);
    chunk.timing = timing;
    for (const auto& k : w.diagnostics.kept_indices) chunk.kept_indices.push_back(k[b].cpu());
    for (const auto& g : w.diagnostics.gates)
      chunk.gates.push_back(g.dim() > 0 && g.size(0) == batch_size ? g[b].cpu() : g.cpu());
    out.push_back(std::move(chunk));
  }
  return out;
}

Policy Policy::load(const std::string& directory, const PolicyOptions& requested) {
  // Where load time goes, for the info log: (phase, ms).
  const auto load_start = Clock::now();
  auto lap_start = load_start;
  std::string phases;
  const auto lap = [&](const char* phase) {
    phases += (phases.empty() ? "" : ", ") + std::string(phase) + " " + std::to_string(std::lround(ms_since(lap_start))) + " ms";
    lap_start = Clock::now();
  };
  PolicyOptions options = requested;
  // "cuda" means the current CUDA device: name it (cuda:0, ...), as every tensor reports its
  // device with the index and caches keyed by device (RoPE tables, normalization statistics)
  // must find their entries, never rebuild them (from host memory) under a CUDA graph capture.
  if (options.device.is_cuda()) {
    const int64_t count = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    check(count > 0, "PolicyOptions::device " + options.device.str(), "CUDA requested, but no CUDA device is available");
    check(!options.device.has_index() || options.device.index() < count, "PolicyOptions::device " + options.device.str(),
          "no such CUDA device (" + std::to_string(count) + " available)");
    if (!options.device.has_index()) options.device = torch::empty({0}, torch::TensorOptions().device(options.device)).device();
  } else {
    check(options.device.is_cpu(), "PolicyOptions::device " + options.device.str(), "only cpu and cuda are supported");
  }
  auto impl = std::make_shared<Impl>();
  impl->options = options;
  if (options.threads > 0) torch::set_num_threads(options.threads);
  if (options.prompt_format != "auto") (void)parse_prompt_format(options.prompt_format);  // named error before I/O
  check(options.normalization == "bounds_q99" || options.normalization == "bounds", "PolicyOptions::normalization",
        "'" + options.normalization + "' is not 'bounds_q99' or 'bounds'");
  check(!options.dtype || *options.dtype == torch::kFloat32 || *options.dtype == torch::kBFloat16 ||
            *options.dtype == torch::kFloat16,
        "PolicyOptions::dtype", "must be float32, bfloat16 or float16");

  const io::Checkpoint ckpt = io::Checkpoint::open(directory);
  lap("checkpoint files");
  PolicySettings& settings = impl->settings;
  std::tie(impl->prompt_format, settings.prompt_format_source) = resolve_prompt_format(options.prompt_format, ckpt.config);
  std::tie(impl->dtype, settings.dtype_source) = resolve_dtype(options.dtype, ckpt.model, options.device);
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
  impl->cameras_source = options.num_images > 0 ? "PolicyOptions::num_images" : "config.json num_images_in_input";
  check(impl->num_images > 0, directory,
        "config.json has no num_images_in_input: set PolicyOptions::num_images to the camera count the policy was "
        "trained with");

  const auto tensor_options = torch::TensorOptions().dtype(impl->dtype).device(options.device);
  impl->tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::from_directory(directory));
  lap("tokenizer");
  vision::PreprocessOptions pre;
  pre.center_crop = options.center_crop;
  pre.libero_resize = options.center_crop;
  pre.device = options.device;
  impl->preprocessor = std::make_unique<vision::ImagePreprocessor>(*ckpt.preprocessor, pre);
  impl->vision = vision::VisionTower::load(ckpt.model, ckpt.config, tensor_options);
  lap("vision");
  impl->llm = llm::load_qwen2(ckpt.model, ckpt.config.text_config, tensor_options);
  impl->max_positions = ckpt.config.text_config.max_position_embeddings;
  const torch::Tensor& queries = ckpt.model.at("action_queries.weight");
  check(queries.dim() == 2 && queries.size(1) == ckpt.config.text_config.hidden_size, "action_queries.weight",
        "expected (N, " + std::to_string(ckpt.config.text_config.hidden_size) + "), found " + io::shape_string(queries.sizes()));
  impl->action_queries = queries.to(tensor_options).clone();
  impl->stop_embedding = impl->llm->embed(torch::tensor({kStopId}, torch::kInt64));
  // The RoPE table for every position once, so that no call extends (reallocates) it under a
  // captured CUDA graph.
  (void)impl->llm->rope_tables(impl->max_positions, options.device, impl->dtype);
  lap("llm");
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
  lap("head");
  // bf16 on a CPU: fp32 matmuls of fp32 weight copies where bf16 would be emulated (see
  // PolicyOptions::cpu_bf16_matmul), made once here.
  impl->llm->set_cpu_bf16_matmul(options.cpu_bf16_matmul);
  const bool fp32_matmuls = impl->llm->bf16_matmul_in_fp32();
  impl->vision->set_bf16_matmul_in_fp32(fp32_matmuls);
  nn::keep_fp32_copies(*impl->head, fp32_matmuls);
  if (impl->proprio_projector) nn::keep_fp32_copies(*impl->proprio_projector, fp32_matmuls);
  if (fp32_matmuls) {
    log_info("bf16 on a CPU without native bf16 dot products: linear layers run as fp32 matmuls");
    lap("fp32 weight copies");
  }
  switch (impl->head->config().kind) {
    case policy::HeadKind::base: settings.head = "vla-adapter"; break;
    case policy::HeadKind::pro: settings.head = "vla-adapter-pro"; break;
    case policy::HeadKind::focus: settings.head = "focusvla"; break;
  }
  settings.prompt_format = to_string(impl->prompt_format);
  settings.center_crop = options.center_crop;
  settings.dtype = impl->dtype;
  settings.device = options.device;
  settings.matmul = options.device.is_cuda()              ? "cuda"
                    : impl->dtype == torch::kFloat32        ? "fp32"
                    : impl->dtype == torch::kFloat16        ? "native-fp16"
                    : fp32_matmuls                          ? "fp32-copies"
                                                            : "native-bf16";
  settings.unnorm_key = impl->unnorm_key;
  settings.normalization = options.normalization;
  settings.cameras = impl->num_images;
  settings.proprio_dim = impl->proprio_projector ? impl->proprio_projector->proprio_dim() : 0;
  settings.chunk = impl->head->config().chunk;
  settings.action_dim = impl->head->config().action_dim;
  log_info(directory + ": loaded (" + impl->unnorm_key + ", " + std::to_string(impl->num_images) + " camera(s), " +
           settings.prompt_format + " prompt, center crop " + (settings.center_crop ? "on" : "off") + ", " +
           dtype_name(impl->dtype) + ", matmul " + settings.matmul + ") in " +
           std::to_string(std::lround(ms_since(load_start))) + " ms: " + phases);
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
std::string Policy::head_kind() const { return impl_->settings.head; }
const std::string& Policy::unnorm_key() const { return impl_->unnorm_key; }
const PolicyOptions& Policy::options() const { return impl_->options; }
const PolicySettings& Policy::settings() const { return impl_->settings; }
PromptText Policy::prompt(const std::string& instruction) const { return impl_->prompt(instruction); }
std::string Policy::last_execution() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->last_execution;
}

}  // namespace focusvla
