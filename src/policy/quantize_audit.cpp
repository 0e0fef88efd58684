#include "focusvla/policy/quantize_audit.h"

#include <algorithm>
#include <map>

#include "focusvla/core/error.h"

namespace focusvla {
namespace {

constexpr const char* kWhat = "compare quantize";
const std::string kBlockPrefix = "head.blocks.";

// What one traced act leaves per block: the kept positions (B, H, T, K) and the gate values.
struct Trace {
  std::map<int64_t, torch::Tensor> kept, gate;
  ActionChunk chunk;
};

Trace trace(const Policy& policy, const Observation& observation) {
  Trace t;
  t.chunk = policy.act_traced(observation, [&](const std::string& name, const torch::Tensor& value) {
    if (name.compare(0, kBlockPrefix.size(), kBlockPrefix) != 0) return;
    const auto dot = name.find('.', kBlockPrefix.size());
    if (dot == std::string::npos) return;
    const int64_t block = std::stoll(name.substr(kBlockPrefix.size(), dot - kBlockPrefix.size()));
    const std::string what = name.substr(dot + 1);
    if (what == "kept") t.kept[block] = value.detach().to(torch::kCPU).clone();
    if (what == "gate") t.gate[block] = value.detach().to(torch::kCPU, torch::kFloat64).clone();
  });
  return t;
}

// Jaccard of the top-K sets of each row of two (..., K) index tensors over `positions` positions.
torch::Tensor jaccard_rows(const torch::Tensor& a, const torch::Tensor& b, int64_t positions) {
  const int64_t k = a.size(-1);
  const auto mask = [&](const torch::Tensor& idx) {
    const torch::Tensor rows = idx.reshape({-1, k}).to(torch::kLong);
    return torch::zeros({rows.size(0), positions}, torch::kBool).scatter_(1, rows, true);
  };
  const torch::Tensor ma = mask(a), mb = mask(b);
  const torch::Tensor inter = (ma & mb).sum(1).to(torch::kFloat64);
  const torch::Tensor uni = (ma | mb).sum(1).to(torch::kFloat64);
  return inter / uni;
}

}  // namespace

QuantizeAudit audit_quantization(const Policy& reference, const Policy& quantized, const Observation& observation) {
  check(reference.head_kind() == quantized.head_kind() && reference.num_images() == quantized.num_images() &&
            reference.chunk_size() == quantized.chunk_size() && reference.action_dim() == quantized.action_dim(),
        kWhat, "the two policies are not the same checkpoint (head " + reference.head_kind() + " vs " +
                   quantized.head_kind() + ")");
  const Trace r = trace(reference, observation);
  const Trace q = trace(quantized, observation);
  QuantizeAudit audit;
  audit.reference_quantize = reference.settings().quantize;
  audit.quantized_quantize = quantized.settings().quantize;
  std::map<int64_t, BlockFocusChange> blocks;
  double kept_sum = 0;
  int64_t kept_blocks = 0;
  for (const auto& [block, kept] : r.kept) {
    const auto other = q.kept.find(block);
    check(other != q.kept.end() && other->second.sizes() == kept.sizes(), kWhat,
          "block " + std::to_string(block) + " kept different shapes");
    const int64_t positions = std::max(kept.max().item<int64_t>(), other->second.max().item<int64_t>()) + 1;
    const torch::Tensor j = jaccard_rows(kept, other->second, positions);
    BlockFocusChange& b = blocks[block];
    b.block = block;
    b.has_kept = true;
    b.kept_jaccard_mean = j.mean().item<double>();
    b.kept_jaccard_min = j.min().item<double>();
    kept_sum += b.kept_jaccard_mean;
    audit.kept_jaccard_min = std::min(audit.kept_jaccard_min, b.kept_jaccard_min);
    ++kept_blocks;
  }
  for (const auto& [block, gate] : r.gate) {
    const auto other = q.gate.find(block);
    check(other != q.gate.end() && other->second.sizes() == gate.sizes(), kWhat,
          "block " + std::to_string(block) + " gates of different shapes");
    const torch::Tensor d = (other->second - gate).abs();
    BlockFocusChange& b = blocks[block];
    b.block = block;
    b.has_gate = true;
    b.gate_mean_abs_change = d.mean().item<double>();
    b.gate_max_abs_change = d.max().item<double>();
  }
  for (auto& kv : blocks) audit.blocks.push_back(kv.second);
  audit.kept_jaccard_mean = kept_blocks > 0 ? kept_sum / static_cast<double>(kept_blocks) : 1.0;
  const ActionChunk::Matrix distance = (q.chunk.normalized - r.chunk.normalized).cwiseAbs() / 2.0;
  audit.action_mean_distance = distance.mean();
  audit.action_max_distance = distance.maxCoeff();
  audit.reference = r.chunk;
  audit.quantized = q.chunk;
  return audit;
}

nlohmann::json audit_json(const QuantizeAudit& a) {
  const auto matrix = [](const ActionChunk::Matrix& m) {
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t i = 0; i < m.rows(); ++i) {
      nlohmann::json row = nlohmann::json::array();
      for (int64_t j = 0; j < m.cols(); ++j) row.push_back(m(i, j));
      rows.push_back(row);
    }
    return rows;
  };
  nlohmann::json blocks = nlohmann::json::array();
  for (const auto& b : a.blocks)
    blocks.push_back({{"block", b.block},
                      {"kept_jaccard_mean", b.has_kept ? nlohmann::json(b.kept_jaccard_mean) : nlohmann::json()},
                      {"kept_jaccard_min", b.has_kept ? nlohmann::json(b.kept_jaccard_min) : nlohmann::json()},
                      {"gate_mean_abs_change", b.has_gate ? nlohmann::json(b.gate_mean_abs_change) : nlohmann::json()},
                      {"gate_max_abs_change", b.has_gate ? nlohmann::json(b.gate_max_abs_change) : nlohmann::json()}});
  return {{"reference_quantize", a.reference_quantize},
          {"quantized_quantize", a.quantized_quantize},
          {"kept_jaccard_mean", a.kept_jaccard_mean},
          {"kept_jaccard_min", a.kept_jaccard_min},
          {"action_mean_distance", a.action_mean_distance},
          {"action_max_distance", a.action_max_distance},
          {"blocks", blocks},
          {"reference_actions", matrix(a.reference.actions)},
          {"quantized_actions", matrix(a.quantized.actions)}};
}

}  // namespace focusvla
