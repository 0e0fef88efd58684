#include "focusvla/policy/policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <optional>
#include <tuple>
#include <utility>


#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/io/checkpoint.h"
#include "focusvla/llm/qwen2.h"
#include "focusvla/policy/batch_buckets.h"
#include "focusvla/policy/head.h"
#include "focusvla/policy/graph_runner.h"
#include "focusvla/policy/normalization.h"
#include "focusvla/policy/proprio_projector.h"
#include "quantize_plan.h"
#include "focusvla/policy/sequence.h"
#include "focusvla/text/bpe_tokenizer.h"
#include "focusvla/text/prompt.h"
#include "focusvla/vision/preprocess.h"
#include "focusvla/vision/vision_tower.h"

namespace focusvla {
namespace {

using Clock = std::chrono::steady_clock;
using policy::ShapeBuffers;
using policy::ShapeKey;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
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
  if (stored == torch::kBFloat16 && nn::cpu_has_native_bf16()) return {stored, checkpoint + ", CPU with native bf16"};
  return {torch::kFloat32, checkpoint + ", float32 on a CPU without native " + dtype_name(stored)};
}


}  // namespace

// Policy::prepare's product: the staging row of an observation's images, and what it was made
// from (only the policy that made it, and only for the same image tensors, uses it).
struct PreparedImages {
  const Policy::Impl* policy = nullptr;
  std::vector<torch::Tensor> images;
  torch::Tensor staged;  // preprocessor->staging_shape(1, cameras)[0], uint8; pinned with CUDA
};

struct Policy::Impl {
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

PromptText Policy::Impl::prompt(const std::string& instruction) const {
  {
    std::lock_guard<std::mutex> lock(prompt_mutex);
    if (const auto hit = prompt_cache.find(instruction); hit != prompt_cache.end()) return hit->second;
  }
  PromptText out = make_prompt(instruction);  // throws for a bad instruction: nothing is cached
  std::lock_guard<std::mutex> lock(prompt_mutex);
  if (prompt_cache.size() >= kPromptCacheSize) prompt_cache.clear();
  prompt_cache.emplace(instruction, out);
  return out;
}

PromptText Policy::Impl::make_prompt(const std::string& instruction) const {
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

// The camera count of one call: the fixed count (config.json / PolicyOptions::num_images) when there
// is one, else the first observation's; every observation of the call must have it (the images of
// a batch are staged into one tensor).
int64_t Policy::Impl::call_cameras(const std::vector<Observation>& batch) const {
  const int64_t cameras = num_images > 0 ? num_images : static_cast<int64_t>(batch.front().images.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    const std::string which = batch.size() > 1 ? "observation " + std::to_string(b) + ": " : "";
    const auto given = static_cast<int64_t>(batch[b].images.size());
    if (num_images > 0)
      check(given == num_images, which + "images",
            "got " + std::to_string(given) + " camera image(s), the policy takes " + std::to_string(num_images) +
                " (" + cameras_source + ")");
    else
      check(given == cameras, which + "images",
            "got " + std::to_string(given) + " camera image(s), observation 0 of this act_batch has " +
                std::to_string(cameras) + " (the camera count follows each call, the same for all its observations)");
    check(given >= 1, which + "images", "no camera images (zero cameras)");
  }
  return cameras;
}

// Everything checked before any work: camera count and images, instruction (prompt ids),
// proprio, sequence length.
Policy::Impl::Validated Policy::Impl::validate(const std::vector<Observation>& batch) const {
  check(!batch.empty(), "act_batch", "no observations");
  Validated v;
  v.key.batch = v.rows = static_cast<int64_t>(batch.size());
  v.key.cameras = call_cameras(batch);
  for (size_t b = 0; b < batch.size(); ++b) {
    const Observation& obs = batch[b];
    const std::string which = batch.size() > 1 ? "observation " + std::to_string(b) + ": " : "";
    for (size_t i = 0; i < obs.images.size(); ++i)
      vision::check_images(obs.images[i], which + "image " + std::to_string(i));
    v.ids.push_back(prompt(obs.instruction).ids);
    v.key.prompt_lengths.push_back(static_cast<int64_t>(v.ids.back().size()));
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
  const int64_t nv = v.key.cameras * vision->config.tokens_per_image();
  for (const int64_t p : v.key.prompt_lengths) {
    const int64_t length = policy::SequenceLayout{nv, p, action_queries.size(0)}.length();
    check(length <= max_positions, "instruction",
          "the sequence is " + std::to_string(length) + " positions long (" + std::to_string(nv) + " visual, " +
              std::to_string(action_queries.size(0)) + " queries, prompt), over the model's limit of " +
              std::to_string(max_positions));
  }
  return v;
}

std::vector<size_t> Policy::Impl::sort_rows(Validated& v) const {
  const std::vector<int64_t>& lengths = v.key.prompt_lengths;
  if (batch_buckets.empty() || std::is_sorted(lengths.begin(), lengths.end(), std::greater<>())) return {};
  std::vector<size_t> order(lengths.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  Validated sorted;
  sorted.key = v.key;
  sorted.rows = v.rows;
  sorted.key.prompt_lengths.clear();
  for (const size_t i : order) {
    sorted.key.prompt_lengths.push_back(lengths[i]);
    sorted.ids.push_back(std::move(v.ids[i]));
  }
  v = std::move(sorted);
  return order;
}

void Policy::Impl::pad_to_bucket(Validated& v) const {
  v.key.batch = policy::padded_batch(batch_buckets, v.rows);
  v.key.prompt_lengths.resize(static_cast<size_t>(v.key.batch), v.key.prompt_lengths.back());
}

const PreparedImages* Policy::Impl::prepared_for(const Observation& observation) const {
  const PreparedImages* p = observation.prepared.get();
  if (p == nullptr || p->policy != this || p->images.size() != observation.images.size()) return nullptr;
  for (size_t i = 0; i < p->images.size(); ++i)
    if (!p->images[i].is_same(observation.images[i])) return nullptr;
  return p;
}

// The buffers of a new input shape.
void Policy::Impl::allocate(const ShapeKey& key, ShapeBuffers& w) const {
  const torch::Device device = options.device;
  const bool cuda = device.is_cuda();
  const auto host = torch::TensorOptions().pinned_memory(cuda);
  const auto on_device = [&](const torch::Tensor& t) {
    return cuda ? torch::zeros(t.sizes(), t.options().device(device).pinned_memory(false)) : t;
  };
  const int64_t b = key.batch;
  const int64_t nv = key.cameras * vision->config.tokens_per_image();
  for (const int64_t p : key.prompt_lengths)
    w.lengths.push_back(policy::SequenceLayout{nv, p, action_queries.size(0)}.length());
  const int64_t length = *std::max_element(w.lengths.begin(), w.lengths.end());
  const int64_t longest_prompt = *std::max_element(key.prompt_lengths.begin(), key.prompt_lengths.end());

  w.staging = torch::empty(preprocessor->staging_shape(b, key.cameras), host.dtype(torch::kUInt8));
  w.images = on_device(w.staging);
  w.ids_host = torch::zeros({b, longest_prompt}, host.dtype(torch::kInt64));
  w.ids = on_device(w.ids_host);
  if (proprio_projector) {
    w.proprio_host = torch::zeros({b, proprio_projector->proprio_dim()}, host.dtype(torch::kFloat32));
    w.proprio = on_device(w.proprio_host);
  }
  w.mask = llm->attention_mask(b, length, b > 1 ? w.lengths : std::vector<int64_t>{});
  // Zeros: the padding of shorter samples stays finite (it is never written).
  w.hidden = torch::zeros({llm->num_layers() + 1, b, length, llm->config().hidden_size},
                          torch::TensorOptions(dtype).device(device));
  w.output = torch::empty({b, head->chunk(), head->action_dim()}, torch::TensorOptions(torch::kFloat32).device(device));
  w.output_host = cuda ? torch::empty(w.output.sizes(), host.dtype(torch::kFloat32)) : w.output;
}

// The host half: images (LIBERO steps, Pillow resize; copied when prepared), token ids and
// normalized proprio into the staging buffers, the bucket's padding rows as copies of the last
// row, then one asynchronous upload each.
ShapeBuffers& Policy::Impl::stage(const std::vector<Observation>& batch, const Validated& v) const {
  ShapeBuffers& w = runner->buffers(v.key, [this](const ShapeKey& key, ShapeBuffers& b) { allocate(key, b); });
  for (int64_t b = 0; b < v.rows; ++b) {
    const Observation& obs = batch[static_cast<size_t>(b)];
    if (const PreparedImages* prepared = prepared_for(obs))
      w.staging[b].copy_(prepared->staged);
    else
      preprocessor->stage(obs.images, w.staging[b]);
    std::copy(v.ids[static_cast<size_t>(b)].begin(), v.ids[static_cast<size_t>(b)].end(), w.ids_host[b].data_ptr<int64_t>());
    if (proprio_projector) proprio_normalizer->normalize(obs.proprio, w.proprio_host[b].data_ptr<float>());
  }
  for (int64_t b = v.rows; b < v.key.batch; ++b) {
    w.staging[b].copy_(w.staging[v.rows - 1]);
    w.ids_host[b].copy_(w.ids_host[v.rows - 1]);
    if (proprio_projector) w.proprio_host[b].copy_(w.proprio_host[v.rows - 1]);
  }
  if (options.device.is_cuda()) {
    w.images.copy_(w.staging, /*non_blocking=*/true);
    w.ids.copy_(w.ids_host, /*non_blocking=*/true);
    if (proprio_projector) w.proprio.copy_(w.proprio_host, /*non_blocking=*/true);
  }
  return w;
}

// The device half of one call, from the staged inputs to w.output: only device work, so that it
// can be captured as a CUDA graph (no host reads, no pageable copies, fixed shapes).
void Policy::Impl::forward(ShapeBuffers& w, const ShapeKey& key, StageTimer* timer) const {
  const auto mark = [&] {
    if (timer != nullptr) timer->mark();
  };
  const torch::Tensor pixels = preprocessor->normalize(w.images, dtype);  // (B, N, 3 * encoders, S, S)
  mark();
  const torch::Tensor features = vision->features(pixels);  // (B, Nv, vision_dim)
  mark();
  const torch::Tensor visual = intervene(intervention, "vision.output", vision->project(features));  // (B, Nv, D)
  mark();

  // The sequences, right-padded, written straight into hidden[0] (SPEC 6, 11).
  torch::Tensor embeds = w.hidden.select(0, 0);
  for (int64_t b = 0; b < key.batch; ++b) {
    const int64_t p = key.prompt_lengths[static_cast<size_t>(b)];
    const torch::Tensor text = llm->embed_tokens->lookup(w.ids[b].narrow(0, 0, p));  // (P, D)
    policy::assemble_sequence(embeds[b], text, visual[b], action_queries, stop_embedding);
  }
  llm->forward_into(w.hidden, embeds, w.mask);  // (25, B, L, D)
  policy::Conditioning c =
      policy::conditioning(w.hidden, visual.size(1), key.prompt_lengths, action_queries.size(0));  // SPEC 8
  c.visual = hook("conditioning.visual", c.visual);
  c.queries = hook("conditioning.queries", c.queries);
  mark();

  const torch::Tensor p = proprio_projector ? proprio_projector->forward(w.proprio).unsqueeze(1) : torch::Tensor();
  w.output.copy_(head->forward(c.visual, c.queries, p, options.diagnostics ? &w.diagnostics : nullptr));
}

// Actions back in robot units, the timing, the diagnostics, per sample.
std::vector<ActionChunk> Policy::Impl::unpack(const ShapeBuffers& w, int64_t rows,
                                              const policy::GraphRunner::Result& result, double host_ms,
                                              Clock::time_point start) const {
  StageTiming timing;
  timing.cuda_graph = result.replayed;
  timing.total_ms = ms_since(start);
  timing.device_ms = result.device_ms;
  const std::vector<double>& stages = result.stage_ms;
  if (result.replayed) {
    timing.preprocess_ms = host_ms;
    timing.vision_ms = timing.projector_ms = timing.llm_ms = timing.head_ms = std::numeric_limits<double>::quiet_NaN();
  } else {
    timing.preprocess_ms = host_ms + stages.at(0);
    timing.vision_ms = stages.at(1);
    timing.projector_ms = stages.at(2);
    timing.llm_ms = stages.at(3);
    timing.head_ms = stages.at(4);
  }
  const int64_t batch = w.output_host.size(0);  // rows, then the bucket's padding
  std::vector<ActionChunk> out;
  for (int64_t b = 0; b < rows; ++b) {
    const torch::Tensor n = w.output_host[b].to(torch::kFloat64).contiguous();
    ActionChunk chunk;
    chunk.normalized = Eigen::Map<const ActionChunk::Matrix>(n.data_ptr<double>(), n.size(0), n.size(1));
    chunk.actions = action_normalizer->unnormalize(chunk.normalized);
    chunk.timing = timing;
    for (const auto& k : w.diagnostics.kept_indices) chunk.kept_indices.push_back(k[b].cpu());
    for (const auto& g : w.diagnostics.gates)
      chunk.gates.push_back(g.dim() > 0 && g.size(0) == batch ? g[b].cpu() : g.cpu());
    out.push_back(std::move(chunk));
  }
  return out;
}

std::vector<ActionChunk> Policy::Impl::run(const std::vector<Observation>& batch) const {
  const c10::InferenceMode inference;
  const auto start = Clock::now();
  Validated v = validate(batch);
  const std::vector<size_t> order = sort_rows(v);
  std::vector<Observation> sorted;
  for (const size_t i : order) sorted.push_back(batch[i]);
  pad_to_bucket(v);
  ShapeBuffers& buffers = stage(order.empty() ? batch : sorted, v);
  const double host_ms = ms_since(start);
  const auto result = runner->run(v.key, [&](ShapeBuffers& b, StageTimer* timer) { forward(b, v.key, timer); }, tapped);
  std::vector<ActionChunk> chunks = unpack(buffers, v.rows, result, host_ms, start);
  if (order.empty()) return chunks;
  std::vector<ActionChunk> out(chunks.size());
  for (size_t i = 0; i < order.size(); ++i) out[order[i]] = std::move(chunks[i]);
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
  const nn::MatmulMode quantized_mode = policy::resolve_quantize(options.quantize, options.device);
  impl->batch_buckets = policy::resolve_batch_buckets(options.batch_buckets, options.device, options.cuda_graphs);
  check(options.max_cached_shapes >= 1, "PolicyOptions::max_cached_shapes",
        std::to_string(options.max_cached_shapes) + " is not 1 or more");

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
  impl->action_normalizer =
      policy::Normalizer::from_stats(stats.action, options.normalization, impl->unnorm_key + " action statistics");

  // The released VLA-Adapter config.json files have no num_images_in_input: then (and without
  // PolicyOptions::num_images) each call's image count is the camera count.
  impl->num_images = options.num_images > 0 ? options.num_images : ckpt.config.num_images_in_input;
  impl->cameras_source = options.num_images > 0 ? "PolicyOptions::num_images" : "config.json num_images_in_input";

  const auto tensor_options = torch::TensorOptions().dtype(impl->dtype).device(options.device);
  impl->tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::from_directory(directory));
  lap("tokenizer");
  vision::PreprocessOptions pre;
  pre.center_crop = options.center_crop;
  // The reference's get_vla_action resizes every camera image that is not the model's size
  // (resize_image_for_policy), whether or not it then center-crops (SPEC 3.1).
  pre.libero_resize = true;
  pre.jpeg_roundtrip = options.jpeg_roundtrip;
  pre.device = options.device;
  impl->preprocessor = std::make_unique<vision::ImagePreprocessor>(*ckpt.preprocessor, pre);
  // Quantized block by block as the encoders load, so that their float weights are never all held
  // at once, and released before the decoder's load (docs/QUANTIZATION.md, Memory).
  int64_t quantized_vision = 0;
  impl->vision = vision::VisionTower::load(ckpt.model, ckpt.config, tensor_options,
                                           policy::quantize_while_loading(quantized_mode, &quantized_vision));
  check(impl->preprocessor->num_encoders() == static_cast<int64_t>(impl->vision->num_encoders()) &&
            impl->preprocessor->image_size() == impl->vision->config.image_size(),
        directory,
        "preprocessor_config.json prepares " + std::to_string(impl->preprocessor->num_encoders()) + " images of " +
            std::to_string(impl->preprocessor->image_size()) + "px, config.json has " +
            std::to_string(impl->vision->num_encoders()) + " vision encoders of " +
            std::to_string(impl->vision->config.image_size()) + "px");
  quantized_vision += policy::quantize_component(*impl->vision->vision_backbone, quantized_mode);
  policy::use_fast_vision_kernels(*impl->vision->vision_backbone, quantized_mode);
  lap("vision");
  // The projector stays in the compute dtype (docs/QUANTIZATION.md): one per-token scale over the
  // concatenated DINOv2 + SigLIP features (two encoders' ranges in one token) tripled its output
  // error (3.8e-2 vs bf16's 1.1e-2 of fp32 at full size), for ~1.5% of an act's time.
  const int64_t quantized_projector = 0;
  int64_t quantized_llm = 0;  // layer by layer as the decoder loads, as the encoders
  impl->llm = llm::Qwen2ModelImpl::load(ckpt.model, ckpt.config.text_config, tensor_options,
                                        llm::Qwen2ModelImpl::kCheckpointPrefix,
                                        policy::quantize_while_loading(quantized_mode, &quantized_llm));
  quantized_llm += policy::quantize_component(*impl->llm->layers, quantized_mode);
  impl->max_positions = ckpt.config.text_config.max_position_embeddings;
  const torch::Tensor& queries = ckpt.model.at("action_queries.weight");
  check(queries.dim() == 2 && queries.size(1) == ckpt.config.text_config.hidden_size, "action_queries.weight",
        "expected (N, " + std::to_string(ckpt.config.text_config.hidden_size) + "), found " + io::shape_string(queries.sizes()));
  impl->action_queries = queries.to(tensor_options).clone();
  impl->stop_embedding = impl->llm->embed(torch::tensor({policy::kStopTokenId}, torch::kInt64));
  // The RoPE table for every position once, so that no call extends (reallocates) it under a
  // captured CUDA graph.
  (void)impl->llm->rope_tables(impl->max_positions, options.device, impl->dtype);
  lap("llm");
  impl->head = policy::load_head(ckpt.action_head, ckpt.config, tensor_options);
  check(impl->head->action_dim() == static_cast<int64_t>(impl->action_normalizer->dim()), directory,
        "the action head predicts " + std::to_string(impl->head->action_dim()) + " dims but '" +
            impl->unnorm_key + "' has statistics for " + std::to_string(impl->action_normalizer->dim()));
  if (!ckpt.files.proprio_projector.empty()) {
    impl->proprio_projector = policy::ProprioProjectorImpl::load(ckpt.proprio_projector, tensor_options);
    check(stats.proprio.has_value(), impl->unnorm_key, "has no proprio statistics but the checkpoint has a proprio projector");
    impl->proprio_normalizer =
        policy::Normalizer::from_stats(*stats.proprio, options.normalization, impl->unnorm_key + " proprio statistics");
    check(static_cast<int64_t>(impl->proprio_normalizer->dim()) == impl->proprio_projector->proprio_dim(),
          impl->unnorm_key + " proprio statistics",
          "have " + std::to_string(impl->proprio_normalizer->dim()) + " dims, the projector takes " +
              std::to_string(impl->proprio_projector->proprio_dim()));
  }
  lap("head");
  // bf16 on a CPU: fp32 matmuls of fp32 weight copies where bf16 would be emulated (see
  // PolicyOptions::cpu_bf16_matmul), made once here.
  const bool fp32_matmuls = nn::bf16_matmul_in_fp32(options.cpu_bf16_matmul, impl->llm->dtype(), impl->llm->device());
  nn::set_cpu_bf16_matmul(*impl->llm, options.cpu_bf16_matmul);
  nn::set_cpu_bf16_matmul(*impl->vision, options.cpu_bf16_matmul);
  nn::set_cpu_bf16_matmul(impl->head->module(), options.cpu_bf16_matmul);
  if (impl->proprio_projector) nn::set_cpu_bf16_matmul(*impl->proprio_projector, options.cpu_bf16_matmul);
  if (fp32_matmuls) {
    log_info("bf16 on a CPU without native bf16 dot products: linear layers run as fp32 matmuls");
    lap("fp32 weight copies");
  }
  impl->runner = std::make_unique<policy::GraphRunner>(
      policy::GraphRunner::Options{options.device, options.cuda_graphs, options.max_cached_shapes});
  settings.head = impl->head->name();
  settings.prompt_format = to_string(impl->prompt_format);
  settings.center_crop = options.center_crop;
  settings.jpeg_roundtrip = options.jpeg_roundtrip;
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
  settings.chunk = impl->head->chunk();
  settings.action_dim = impl->head->action_dim();
  settings.batch_buckets = impl->batch_buckets;
  settings.quantize = nn::is_quantized(quantized_mode) ? nn::matmul_mode_name(quantized_mode) : "none";
  settings.quantized_layers = quantized_vision + quantized_projector + quantized_llm;
  settings.quantize_detail = policy::quantize_detail(quantized_mode, quantized_vision, quantized_projector, quantized_llm,
                                                     impl->dtype, impl->vision->vision_backbone->side_by_side);
  if (quantized_mode == nn::MatmulMode::kInt8 && !nn::cpu_has_int8_dot())
    log_warn("quantize int8 on a CPU without int8 dot products (AVX512-VNNI / AVX-VNNI / AMX): weights are 7-bit "
             "(8-bit ones saturate its u8 x s8 instruction) and int8 GEMMs gain less over float ones here; see "
             "docs/QUANTIZATION.md for the measured speed");
  log_info(directory + ": loaded (" + impl->unnorm_key + ", " +
           (impl->num_images > 0 ? std::to_string(impl->num_images) : std::string("per-call")) + " camera(s), " +
           settings.prompt_format + " prompt, center crop " + (settings.center_crop ? "on" : "off") +
           ", JPEG round trip " + (settings.jpeg_roundtrip ? "on" : "off") + ", " +
           dtype_name(impl->dtype) + ", matmul " + settings.matmul + ", quantize " + settings.quantize + ") in " +
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
int64_t Policy::chunk_size() const { return impl_->head->chunk(); }
int64_t Policy::action_dim() const { return impl_->head->action_dim(); }
int64_t Policy::proprio_dim() const { return impl_->proprio_projector ? impl_->proprio_projector->proprio_dim() : 0; }
std::string Policy::head_kind() const { return impl_->settings.head; }
const std::string& Policy::unnorm_key() const { return impl_->unnorm_key; }
const PolicyOptions& Policy::options() const { return impl_->options; }
const PolicySettings& Policy::settings() const { return impl_->settings; }

PromptText Policy::prompt(const std::string& instruction) const { return impl_->prompt(instruction); }
void Policy::validate(const Observation& observation) const { impl_->validate({observation}); }

Observation Policy::prepare(Observation observation) const {
  const c10::InferenceMode inference;
  const Impl& impl = *impl_;
  impl.validate({observation});
  const auto cameras = static_cast<int64_t>(observation.images.size());
  auto prepared = std::make_shared<PreparedImages>();
  prepared->policy = &impl;
  prepared->images = observation.images;
  std::vector<int64_t> shape = impl.preprocessor->staging_shape(1, cameras);
  shape.erase(shape.begin());
  prepared->staged = torch::empty(shape, torch::TensorOptions(torch::kUInt8).pinned_memory(impl.options.device.is_cuda()));
  impl.preprocessor->stage(observation.images, prepared->staged);
  observation.prepared = std::move(prepared);
  return observation;
}

int64_t Policy::image_size() const { return impl_->preprocessor->image_size(); }

int64_t Policy::cached_shapes() const { return impl_->runner->cached_shapes(); }

void Policy::Impl::install_tap(const Tap& t) {
  active_tap = t;
  vision->set_tap(prefixed("vision", t));
  llm->set_tap(prefixed("llm", t));
  head->set_tap(prefixed("head", t));
}

torch::Tensor Policy::Impl::hook(const std::string& name, const torch::Tensor& value) const {
  if (active_tap) active_tap(name, value);
  return intervene(intervention, name, value);
}

void Policy::set_tap(Tap tap) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->tapped = static_cast<bool>(tap);
  impl_->tap = std::move(tap);
  impl_->install_tap(impl_->tap);
}

ActionChunk Policy::act_traced(const Observation& observation, const Tap& tap, const Intervention& intervention) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  Impl& impl = *impl_;
  Tap both = tap;
  if (impl.tap && tap)
    both = [outer = impl.tap, tap](const std::string& name, const torch::Tensor& value) {
      outer(name, value);
      tap(name, value);
    };
  else if (impl.tap)
    both = impl.tap;
  // Installed for this call only: restored however it ends.
  struct Restore {
    Impl& impl;
    bool tapped;
    ~Restore() {
      impl.intervention = {};
      impl.tapped = tapped;
      impl.install_tap(impl.tap);
    }
  } restore{impl, impl.tapped};
  impl.install_tap(both);
  impl.intervention = intervention;
  impl.tapped = true;  // eager: taps and interventions act on a real forward, not a graph replay
  return impl.run({observation}).front();
}

std::string Policy::last_execution() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->runner->last_execution();
}

}  // namespace focusvla
