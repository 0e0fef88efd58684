#include "focusvla/io/state_dict.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/io/safetensors.h"
#include "focusvla/io/torch_pickle.h"

namespace focusvla::io {
namespace {

namespace fs = std::filesystem;

torch::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::F64: return torch::kFloat64;
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U64: return torch::kUInt64;
    case DType::U32: return torch::kUInt32;
    case DType::U16: return torch::kUInt16;
    case DType::U8: return torch::kUInt8;
    case DType::BOOL: return torch::kBool;
    case DType::F8_E4M3: return torch::kFloat8_e4m3fn;
    case DType::F8_E5M2: return torch::kFloat8_e5m2;
  }
  throw Error("safetensors: unsupported dtype");
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// torch::Tensor for one safetensors entry: a view into the mapping when the data is aligned for
// its element type, otherwise an owned copy.
torch::Tensor tensor_view(const SafetensorsFile& file, const TensorInfo& info) {
  const auto options = torch::TensorOptions().dtype(to_scalar_type(info.dtype));
  if (info.nbytes() == 0) return torch::empty(info.shape, options);
  auto* data = const_cast<uint8_t*>(file.data(info));
  if (info.dtype == DType::BOOL) {
    for (uint64_t i = 0; i < info.nbytes(); ++i)
      check(data[i] <= 1, file.path() + ": tensor '" + info.name + "'",
            "BOOL byte " + std::to_string(i) + " is " + std::to_string(data[i]) + ", not 0 or 1");
  }
  std::shared_ptr<MappedFile> keep_alive = file.mapping();
  auto view = torch::from_blob(
      data, info.shape, [keep_alive](void*) mutable { keep_alive.reset(); }, options);
  if (reinterpret_cast<uintptr_t>(data) % dtype_size(info.dtype) != 0) return view.clone();
  return view;
}

void add_safetensors_file(StateDict& state, const SafetensorsFile& file, const std::set<std::string>* only) {
  for (const auto& info : file.tensors()) {
    if (only != nullptr && only->count(info.name) == 0) {
      log_warn(file.path() + ": tensor '" + info.name + "' is not listed in the index; ignored");
      continue;
    }
    state.insert(info.name, tensor_view(file, info), file.path());
  }
}

bool is_index_file(const std::string& path) {
  const std::string suffix = ".index.json";
  return path.size() > suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string shape_string(c10::IntArrayRef shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

void StateDict::insert(const std::string& name, torch::Tensor tensor, const std::string& source) {
  auto existing = entries_.find(name);
  if (existing != entries_.end())
    throw Error(source + ": tensor '" + name + "' is also in " + existing->second.source);
  entries_[name] = Entry{std::move(tensor), source, nullptr, 0, 0};
}

void StateDict::merge(StateDict other) {
  for (auto& [name, e] : other.entries_) {
    auto existing = entries_.find(name);
    if (existing != entries_.end())
      throw Error(e.source + ": tensor '" + name + "' is also in " + existing->second.source);
  }
  for (auto& [name, e] : other.entries_) entries_[name] = std::move(e);
}

const StateDict::Entry& StateDict::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it != entries_.end()) return it->second;
  // Name the neighbours: a typo or a wrong prefix is then obvious.
  std::vector<std::string> near;
  auto lower = entries_.lower_bound(name);
  for (auto i = lower; i != entries_.end() && near.size() < 3; ++i) near.push_back(i->first);
  throw Error("state dict: no tensor '" + name + "'" + (near.empty() ? "" : " (nearest: " + join(near, ", ") + ")"));
}

const torch::Tensor& StateDict::at(const std::string& name) const { return entry(name).tensor; }
const std::string& StateDict::source(const std::string& name) const { return entry(name).source; }

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

int64_t StateDict::numel() const {
  int64_t n = 0;
  for (const auto& kv : entries_) n += kv.second.tensor.numel();
  return n;
}

StateDict StateDict::subset(const std::string& prefix) const {
  StateDict out;
  const std::string p = prefix.empty() ? "" : prefix + ".";
  for (auto it = entries_.lower_bound(p); it != entries_.end() && starts_with(it->first, p); ++it)
    out.entries_[it->first.substr(p.size())] = it->second;
  return out;
}

bool StateDict::has_prefix(const std::string& prefix) const {
  const std::string p = prefix + ".";
  auto it = entries_.lower_bound(p);
  return it != entries_.end() && starts_with(it->first, p);
}

void StateDict::release_pages(const std::string& name) const {
  const Entry& e = entry(name);
  if (e.mapping) e.mapping->release(e.offset, e.nbytes);
}

StateDict StateDict::from_safetensors(const std::string& path) {
  StateDict state;
  if (!is_index_file(path)) {
    SafetensorsFile file = SafetensorsFile::open(path);
    add_safetensors_file(state, file, nullptr);
    for (const auto& info : file.tensors()) {
      auto& e = state.entries_.at(info.name);
      if (e.tensor.data_ptr() == file.data(info)) {
        e.mapping = file.mapping();
        e.offset = file.data_offset() + info.begin;
        e.nbytes = info.nbytes();
      }
    }
    return state;
  }
  const SafetensorsIndex index = SafetensorsIndex::load(path);
  std::map<std::string, std::set<std::string>> by_shard;
  for (const auto& [name, shard] : index.weight_map) by_shard[shard].insert(name);
  const fs::path dir = fs::path(path).parent_path();
  // Every shard must exist before any is read: a missing one is reported up front.
  for (const auto& kv : by_shard) {
    const fs::path shard = dir / kv.first;
    check(fs::exists(shard), path, "shard '" + kv.first + "' listed in the index is missing (" + shard.string() + ")");
  }
  for (const auto& [shard_name, names] : by_shard) {
    StateDict shard = from_safetensors((dir / shard_name).string());
    for (const auto& name : names)
      check(shard.contains(name), path,
            "index maps tensor '" + name + "' to shard '" + shard_name + "', which does not hold it");
    for (const auto& name : shard.keys())
      if (names.count(name) == 0)
        log_warn(path + ": tensor '" + name + "' of shard '" + shard_name + "' is not in the index; ignored");
    for (auto& [name, e] : shard.entries_)
      if (names.count(name)) state.entries_[name] = std::move(e);
  }
  return state;
}

StateDict StateDict::from_torch_file(const std::string& path) {
  check(fs::is_regular_file(path), path, "no such file");
  StateDict state;
  std::shared_ptr<MappedFile> mapping;
  for (auto& [stored, tensor] : read_torch_state_dict(path, &mapping)) {
    const std::string name = starts_with(stored, "module.") ? stored.substr(7) : stored;
    state.insert(name, std::move(tensor), path);
    // A contiguous view into the mapped file can drop its pages once loaded (release_pages).
    Entry& e = state.entries_.at(name);
    if (!mapping || !e.tensor.is_contiguous() || e.tensor.nbytes() == 0) continue;
    const auto begin = reinterpret_cast<uintptr_t>(mapping->data());
    const auto data = reinterpret_cast<uintptr_t>(e.tensor.const_data_ptr());
    if (data >= begin && data - begin <= mapping->size() && e.tensor.nbytes() <= mapping->size() - (data - begin)) {
      e.mapping = mapping;
      e.offset = static_cast<size_t>(data - begin);
      e.nbytes = e.tensor.nbytes();
    }
  }
  return state;
}

std::string LoadReport::describe() const {
  std::ostringstream out;
  auto list = [&out](const char* title, const std::vector<std::string>& items) {
    if (items.empty()) return;
    out << "\n  " << title << " (" << items.size() << "):";
    for (const auto& i : items) out << "\n    " << i;
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("shape mismatch", mismatched);
  return out.str();
}

namespace {

// The stages of LoadOptions::after_stage: every element of every ModuleList under `module`, by
// path, in registration order (an element of a nested list is a stage of its own, not its
// parent's: the outermost list's elements are taken whole).
std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> stages_of(torch::nn::Module& module) {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> stages;
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (dynamic_cast<torch::nn::ModuleListImpl*>(item.value().get()) == nullptr) continue;
    const bool inside_a_stage = std::any_of(stages.begin(), stages.end(), [&](const auto& stage) {
      return starts_with(item.key(), stage.first + ".");
    });
    if (inside_a_stage) continue;
    for (const auto& child : item.value()->named_children()) stages.emplace_back(item.key() + "." + child.key(), child.value());
  }
  return stages;
}

}  // namespace

LoadReport check_module(const torch::nn::Module& module, const StateDict& state, const std::string& prefix,
                        const LoadOptions& options) {
  const StateDict scoped = prefix.empty() ? state : state.subset(prefix);
  LoadReport report;
  std::set<std::string> wanted;
  auto visit = [&](const std::string& name, const torch::Tensor& target) {
    wanted.insert(name);
    if (!scoped.contains(name)) {
      report.missing.push_back(prefix.empty() ? name : prefix + "." + name);
      return;
    }
    const auto& found = scoped.at(name);
    if (found.sizes() != target.sizes())
      report.mismatched.push_back((prefix.empty() ? name : prefix + "." + name) + ": expected " +
                                  shape_string(target.sizes()) + ", found " + shape_string(found.sizes()));
  };
  for (const auto& p : module.named_parameters()) visit(p.key(), p.value());
  for (const auto& b : module.named_buffers()) visit(b.key(), b.value());
  for (const auto& name : scoped.keys()) {
    if (wanted.count(name)) continue;
    const bool skip = std::any_of(options.ignored_prefixes.begin(), options.ignored_prefixes.end(),
                                  [&](const std::string& p) { return starts_with(name, p); });
    (skip ? report.ignored : report.unexpected).push_back(prefix.empty() ? name : prefix + "." + name);
  }
  return report;
}

LoadReport load_module(torch::nn::Module& module, const StateDict& state, const std::string& prefix,
                       const LoadOptions& options) {
  LoadReport report = check_module(module, state, prefix, options);
  if (!report.ok())
    throw Error("loading '" + (prefix.empty() ? module.name() : prefix) + "' from " +
                (state.empty() ? std::string("an empty state dict") : state.source(state.keys().front())) +
                ":" + report.describe());
  torch::NoGradGuard no_grad;
  const StateDict scoped = prefix.empty() ? state : state.subset(prefix);
  std::set<std::string> written;  // a stage's tensors, written before the rest
  auto copy = [&](const std::string& name, torch::Tensor& target) {
    if (!written.insert(name).second) return;
    target.copy_(scoped.at(name));
    if (options.release_pages) scoped.release_pages(name);
  };
  if (options.after_stage) {
    for (auto& [path, stage] : stages_of(module)) {
      for (auto& p : stage->named_parameters()) copy(path + "." + p.key(), p.value());
      for (auto& b : stage->named_buffers()) copy(path + "." + b.key(), b.value());
      options.after_stage(path, *stage);
    }
  }
  for (auto& p : module.named_parameters()) copy(p.key(), p.value());
  for (auto& b : module.named_buffers()) copy(b.key(), b.value());
  return report;
}

}  // namespace focusvla::io
