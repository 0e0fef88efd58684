#include "focusvla/policy/explain.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <utility>

#include "focusvla/core/error.h"

namespace focusvla {
namespace {

const std::string kWhat = "explain";
const std::string kBlockPrefix = "head.blocks.";

// What one block's taps leave behind, reduced on the spot (CPU, double).
struct BlockRecord {
  torch::Tensor kept_share;        // (Nv) share of rows that kept each position
  torch::Tensor attention;         // (columns) mean softmax weight over (B, heads, T)
  torch::Tensor visual_attention;  // (Nv) the same of a cascaded block's visual softmax
  torch::Tensor gate;              // as tapped, on the CPU
  int64_t heads = 0;
};

// The named intermediates explain() reads, collected from one act_traced.
struct Recorder {
  int64_t nv = 0, nq = 0, hidden = 0;
  std::map<int64_t, BlockRecord> blocks;

  Tap tap() {
    return [this](const std::string& name, const torch::Tensor& value) { record(name, value); };
  }

  void record(const std::string& name, const torch::Tensor& value) {
    if (name == "conditioning.visual") {
      nv = value.size(2);
      hidden = value.size(3);
      return;
    }
    if (name == "conditioning.queries") {
      nq = value.size(2);
      return;
    }
    if (name.compare(0, kBlockPrefix.size(), kBlockPrefix) != 0) return;
    const auto dot = name.find('.', kBlockPrefix.size());
    if (dot == std::string::npos) return;  // the block's output
    const int64_t index = std::stoll(name.substr(kBlockPrefix.size(), dot - kBlockPrefix.size()));
    const std::string what = name.substr(dot + 1);
    BlockRecord& b = blocks[index];
    const auto mean_rows = [](const torch::Tensor& w) {  // (B, H, T, C) -> (C)
      return w.detach().to(torch::kCPU, torch::kFloat64).reshape({-1, w.size(-1)}).mean(0);
    };
    if (what == "kept") {  // (B, H, T, K) positions
      const torch::Tensor kept = value.detach().to(torch::kCPU).reshape({-1});
      const double rows = static_cast<double>(value.numel() / value.size(-1));
      b.kept_share = torch::bincount(kept, {}, nv).to(torch::kFloat64) / rows;
      b.heads = value.size(1);
    } else if (what == "attention") {
      b.attention = mean_rows(value);
      b.heads = value.size(1);
    } else if (what == "visual_attention") {
      b.visual_attention = mean_rows(value);
      b.heads = value.size(1);
    } else if (what == "gate") {
      b.gate = value.detach().to(torch::kCPU, torch::kFloat64).clone();
    }
  }
};

// Head visual position -> (camera, patch) on the grids (the mapping of explain.h).
struct Layout {
  int64_t cameras = 0, per_camera = 0, rows = 0, cols = 0;
};

Layout layout_of(int64_t nv, int64_t cameras) {
  check(nv > 0 && cameras > 0 && nv % cameras == 0, kWhat,
        std::to_string(nv) + " visual positions do not split into " + std::to_string(cameras) + " cameras");
  Layout l;
  l.cameras = cameras;
  l.per_camera = nv / cameras;
  l.rows = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(l.per_camera))));
  check(l.rows * l.rows == l.per_camera, kWhat,
        std::to_string(l.per_camera) + " tokens per camera are not a square patch grid");
  l.cols = l.rows;
  return l;
}

PatchMap patch_map(const std::string& kind, const torch::Tensor& positions, const Layout& l) {
  PatchMap m;
  m.kind = kind;
  const torch::Tensor p = positions.to(torch::kFloat64).contiguous();
  m.positions.assign(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
  m.prompt_token = m.positions.at(0);
  for (int64_t c = 0; c < l.cameras; ++c) m.cameras.push_back({l.rows, l.cols, std::vector<double>(l.per_camera, 0.0)});
  for (size_t j = 1; j < m.positions.size(); ++j) {
    const int64_t token = static_cast<int64_t>(j) - 1;
    m.cameras[token / l.per_camera].values[token % l.per_camera] = m.positions[j];
  }
  return m;
}

// The mean of the blocks' maps (blocks without one are skipped), and each block's.
std::optional<PatchMap> mean_map(const std::string& kind, const std::vector<torch::Tensor>& per_block, const Layout& l,
                                 std::vector<PatchMap>* each) {
  std::vector<torch::Tensor> defined;
  for (const auto& t : per_block)
    if (t.defined()) defined.push_back(t);
  if (defined.empty()) return std::nullopt;
  if (each)
    for (const auto& t : defined) each->push_back(patch_map(kind, t, l));
  return patch_map(kind, torch::stack(defined).mean(0), l);
}

GateStats gate_stats(const torch::Tensor& gate, int64_t hidden) {
  GateStats s;
  s.kind = gate.size(-1) == hidden ? "element" : "head";
  s.values = gate.numel();
  s.mean = gate.mean().item<double>();
  s.below_0_1 = (gate < 0.1).to(torch::kFloat64).mean().item<double>();
  s.above_0_9 = (gate > 0.9).to(torch::kFloat64).mean().item<double>();
  return s;
}

// Columns of a one-softmax block: [self T | queries Nq | proprio 0/1 | visual Nv].
SourceMass source_mass(const torch::Tensor& mean_weights, int64_t chunk, int64_t nq, int64_t proprio, int64_t nv,
                       int64_t block) {
  check(mean_weights.size(0) == chunk + nq + proprio + nv, kWhat,
        "block " + std::to_string(block) + " attends over " + std::to_string(mean_weights.size(0)) +
            " columns, expected " + std::to_string(chunk + nq + proprio + nv) + " (self + queries + proprio + visual)");
  const auto part = [&](int64_t from, int64_t count) {
    return count == 0 ? 0.0 : mean_weights.narrow(0, from, count).sum().item<double>();
  };
  SourceMass m;
  m.self = part(0, chunk);
  m.action_queries = part(chunk, nq);
  m.proprio = part(chunk + nq, proprio);
  m.visual = part(chunk + nq + proprio, nv);
  return m;
}

// |n_ablated - n| / 2: the distance in units of the action range (explain.h).
Ablation compare(std::string name, std::string description, const ActionChunk& ablated, const ActionChunk& normal) {
  Ablation a;
  a.name = std::move(name);
  a.description = std::move(description);
  a.actions = ablated.actions;
  a.normalized = ablated.normalized;
  const ActionChunk::Matrix d = (ablated.normalized - normal.normalized).cwiseAbs() / 2.0;
  a.mean_distance = d.mean();
  a.max_distance = d.maxCoeff();
  return a;
}

// An intervention that zeroes the tensor at `point` only.
Intervention zero_at(const std::string& point) {
  return [point](const std::string& name, const torch::Tensor& value) {
    return name == point ? torch::zeros_like(value) : torch::Tensor();
  };
}

std::vector<Ablation> reliance_test(const Policy& policy, const Observation& obs, const ActionChunk& normal,
                                    const ExplainOptions& options) {
  std::vector<Ablation> out;
  const auto run = [&](const Observation& o, const Intervention& intervention) {
    return policy.act_traced(o, Tap(), intervention);
  };
  Observation gray = obs;
  for (auto& image : gray.images) image = torch::full(image.sizes(), options.gray, image.options());
  out.push_back(compare("gray_cameras",
                        "every camera a constant gray image (" + std::to_string(options.gray) + ") of its size",
                        run(gray, {}), normal));
  out.push_back(compare("visual_tokens_zeroed", "the projector output zeroed before it enters the sequence",
                        run(obs, zero_at("vision.output")), normal));
  if (obs.images.size() > 1) {
    Observation swapped = obs;
    std::reverse(swapped.images.begin(), swapped.images.end());
    out.push_back(compare("cameras_swapped",
                          obs.images.size() == 2 ? "the two cameras swapped" : "the cameras in reverse order",
                          run(swapped, {}), normal));
  }
  out.push_back(compare("head_visual_zeroed",
                        "the head's visual states zeroed (every layer; the action queries keep theirs)",
                        run(obs, zero_at("conditioning.visual")), normal));
  out.push_back(compare("action_queries_zeroed", "the head's action-query states zeroed (the proprio token kept)",
                        run(obs, zero_at("conditioning.queries")), normal));
  return out;
}

std::string percent(double share) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3g%%", 100.0 * share);
  return buffer;
}

}  // namespace

double PatchGrid::sum() const {
  double s = 0;
  for (const double v : values) s += v;
  return s;
}

const Ablation* Explanation::ablation(const std::string& name) const {
  for (const auto& a : ablations)
    if (a.name == name) return &a;
  return nullptr;
}

Verdict reliance_verdict(const std::vector<Ablation>& ablations) {
  const Ablation *head_visual = nullptr, *queries = nullptr, *gray = nullptr;
  for (const auto& a : ablations) {
    if (a.name == "head_visual_zeroed") head_visual = &a;
    if (a.name == "action_queries_zeroed") queries = &a;
    if (a.name == "gray_cameras") gray = &a;
  }
  if (!head_visual || !queries) return {"not-run", "reliance test not run"};
  const double v = head_visual->mean_distance, q = queries->mean_distance;
  std::string numbers = "without its visual tokens the head's actions move " + percent(v) +
                        " of the action range, without the action queries " + percent(q);
  if (gray) numbers += "; gray cameras: " + percent(gray->mean_distance);
  if (v < kInsensitiveBelow && q < kInsensitiveBelow)
    return {"insensitive", "the actions barely respond to the head's conditioning (an untrained or collapsed head; "
                           "nothing to conclude about vision): " + numbers};
  if (std::max(v, q) < kWeakResponseBelow) numbers += " (the actions respond little to the conditioning at all)";
  if (v < std::max(kInsensitiveBelow, kNoVisualRatio * q)) {
    const bool through_queries = gray && gray->mean_distance >= kInsensitiveBelow;
    return {"none", "no visual dependence in the head: " + numbers +
                        (through_queries ? "; the images reach the actions only through the action queries" : "")};
  }
  if (v < kShortcutRatio * q)
    return {"weak", "weak visual dependence, a shortcut through the action queries: " + numbers};
  return {"uses-vision", "uses vision: " + numbers};
}

Explanation explain(const Policy& policy, const Observation& observation, const ExplainOptions& options) {
  Recorder rec;
  Explanation e;
  e.actions = policy.act_traced(observation, rec.tap());
  const PolicySettings& s = policy.settings();
  e.head = s.head;
  e.cameras = static_cast<int64_t>(observation.images.size());  // num_images() is 0 when it follows each call
  e.chunk = policy.chunk_size();
  e.visual_positions = rec.nv;
  e.query_positions = rec.nq;
  e.view_fraction = s.center_crop ? std::sqrt(0.9) : 1.0;
  // A head of another family may tap no blocks: then there are no maps, gates or masses, and the
  // reliance test still runs.
  check(rec.nv > 0, kWhat, "the policy reported no conditioning (no 'conditioning.visual' tap)");
  const Layout l = layout_of(rec.nv, e.cameras);
  e.grid_rows = l.rows;
  e.grid_cols = l.cols;
  e.blocks = static_cast<int64_t>(rec.blocks.size());

  std::vector<torch::Tensor> kept, attention;
  const int64_t proprio = policy.proprio_dim() > 0 ? 1 : 0;
  for (const auto& [index, b] : rec.blocks) {
    e.heads = std::max(e.heads, b.heads);
    kept.push_back(b.kept_share);
    if (b.attention.defined()) {
      e.source_mass.push_back(source_mass(b.attention, e.chunk, rec.nq, proprio, rec.nv, index));
      attention.push_back(b.attention.narrow(0, b.attention.size(0) - rec.nv, rec.nv));
    } else {
      attention.push_back(b.visual_attention);
    }
    if (b.gate.defined()) {
      if (b.gate.numel() == 1)
        e.scalar_gates.push_back(b.gate.item<double>());
      else
        e.gates.push_back(gate_stats(b.gate, rec.hidden));
    }
  }
  e.kept = mean_map("kept", kept, l, options.per_block ? &e.kept_per_block : nullptr);
  e.attention = mean_map("attention", attention, l, options.per_block ? &e.attention_per_block : nullptr);

  if (options.reliance) e.ablations = reliance_test(policy, observation, e.actions, options);
  e.verdict = options.reliance ? reliance_verdict(e.ablations) : Verdict{"not-run", "reliance test not run"};
  return e;
}

// ---------------------------------------------------------------------------------------------
// JSON

namespace {

nlohmann::json matrix_json(const ActionChunk::Matrix& m) {
  nlohmann::json rows = nlohmann::json::array();
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    rows.push_back(std::vector<double>(m.row(r).data(), m.row(r).data() + m.cols()));
  return rows;
}

nlohmann::json grid_json(const PatchGrid& g) {
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t r = 0; r < g.rows; ++r)
    rows.push_back(std::vector<double>(g.values.begin() + r * g.cols, g.values.begin() + (r + 1) * g.cols));
  return rows;
}

nlohmann::json map_json(const PatchMap& m) {
  nlohmann::json cameras = nlohmann::json::array();
  for (const auto& g : m.cameras) cameras.push_back({{"grid", grid_json(g)}, {"sum", g.sum()}});
  return {{"kind", m.kind}, {"prompt_token", m.prompt_token}, {"positions", m.positions}, {"cameras", cameras}};
}

}  // namespace

nlohmann::json explanation_json(const Explanation& e) {
  nlohmann::json j;
  j["head"] = e.head;
  j["cameras"] = e.cameras;
  j["blocks"] = e.blocks;
  j["heads"] = e.heads;
  j["chunk"] = e.chunk;
  j["visual_positions"] = e.visual_positions;
  j["query_positions"] = e.query_positions;
  j["grid"] = {{"rows", e.grid_rows}, {"cols", e.grid_cols}, {"view_fraction", e.view_fraction},
               {"position_of_patch", "head position j >= 1 is patch (j - 1) % (rows * cols) of camera "
                                     "(j - 1) / (rows * cols); position 0 is the prompt's first token"}};
  j["actions"] = matrix_json(e.actions.actions);
  j["normalized"] = matrix_json(e.actions.normalized);
  const auto maps = [](const std::vector<PatchMap>& each) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& m : each) out.push_back(map_json(m));
    return out;
  };
  j["kept"] = e.kept ? map_json(*e.kept) : nlohmann::json();
  j["attention"] = e.attention ? map_json(*e.attention) : nlohmann::json();
  if (!e.kept_per_block.empty()) j["kept_per_block"] = maps(e.kept_per_block);
  if (!e.attention_per_block.empty()) j["attention_per_block"] = maps(e.attention_per_block);
  j["gates"] = nlohmann::json::array();
  for (const auto& g : e.gates)
    j["gates"].push_back({{"kind", g.kind}, {"mean", g.mean}, {"below_0_1", g.below_0_1}, {"above_0_9", g.above_0_9},
                          {"values", g.values}});
  j["scalar_gates"] = e.scalar_gates;
  j["source_mass"] = nlohmann::json::array();
  for (const auto& m : e.source_mass)
    j["source_mass"].push_back(
        {{"self", m.self}, {"action_queries", m.action_queries}, {"proprio", m.proprio}, {"visual", m.visual}});
  j["ablations"] = nlohmann::json::array();
  for (const auto& a : e.ablations)
    j["ablations"].push_back({{"name", a.name},
                              {"description", a.description},
                              {"mean_distance", a.mean_distance},
                              {"max_distance", a.max_distance},
                              {"actions", matrix_json(a.actions)},
                              {"normalized", matrix_json(a.normalized)}});
  j["verdict"] = {{"level", e.verdict.level},
                  {"line", e.verdict.line},
                  {"thresholds",
                   {{"insensitive_below", kInsensitiveBelow},
                    {"no_visual_ratio", kNoVisualRatio},
                    {"shortcut_ratio", kShortcutRatio}}}};
  return j;
}

}  // namespace focusvla
