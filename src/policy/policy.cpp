// Policy's calls: validate -> stage -> run -> unpack, and the small accessors. What a Policy
// holds is policy_impl.h; policy_load.cpp makes it from a checkpoint directory.

#include "focusvla/policy/policy.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <mutex>
#include <utility>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/policy/batch_buckets.h"
#include "focusvla/policy/sequence.h"
#include "policy_impl.h"

namespace focusvla {

using Clock = Policy::Impl::Clock;
using policy::ShapeBuffers;
using policy::ShapeKey;

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
  if (p == nullptr || p->policy != id || p->images.size() != observation.images.size()) return nullptr;
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
  prepared->policy = impl.id;
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
