#pragma once
// StateDict: named tensors read from checkpoint files, and the one way modules load from them.
//
// Tensors from safetensors are zero-copy views into the memory-mapped file whenever dtype and
// alignment allow; tensors from torch.save files are owned. Loading a module is a name-for-name
// copy checked in full before anything is written: missing, unexpected and mis-shaped keys are
// reported together, by name, and a failed load leaves the module untouched.

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "focusvla/io/mapped_file.h"

namespace focusvla::io {

class StateDict {
 public:
  // Reads a `.safetensors` file, or a sharded checkpoint through its `*.safetensors.index.json`.
  static StateDict from_safetensors(const std::string& path);
  // Reads a `torch.save` state dict (zip format, as torch >= 1.6 writes); a leading `module.`
  // (DataParallel / DDP) is stripped from every key.
  static StateDict from_torch_file(const std::string& path);

  // Adds a tensor; throws Error when the name is already present.
  void insert(const std::string& name, torch::Tensor tensor, const std::string& source);
  // Moves every entry of `other` in; throws Error on a duplicate name.
  void merge(StateDict other);

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // Throws Error naming the key (and the closest keys present) when absent.
  const torch::Tensor& at(const std::string& name) const;
  // The file a tensor came from.
  const std::string& source(const std::string& name) const;
  std::vector<std::string> keys() const;
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  int64_t numel() const;

  // The entries under `prefix.`, with the prefix removed ("projector" -> "fc1.weight", ...).
  StateDict subset(const std::string& prefix) const;
  // True when some key starts with `prefix.`.
  bool has_prefix(const std::string& prefix) const;

  // True when the tensor is a zero-copy view into a memory-mapped file.
  bool is_mapped(const std::string& name) const { return entry(name).mapping != nullptr; }
  // The file a zero-copy view reads from; null for owned tensors.
  const std::shared_ptr<MappedFile>& mapping(const std::string& name) const { return entry(name).mapping; }

  // For a tensor that views a mapped file: drops its resident pages (see MappedFile::release).
  // A later read of the tensor re-reads the file. No-op for owned tensors.
  void release_pages(const std::string& name) const;

 private:
  struct Entry {
    torch::Tensor tensor;
    std::string source;
    std::shared_ptr<MappedFile> mapping;  // set for zero-copy views
    size_t offset = 0;
    size_t nbytes = 0;
  };
  const Entry& entry(const std::string& name) const;
  std::map<std::string, Entry> entries_;
};

// See LoadOptions::after_stage.
using StageHook = std::function<void(const std::string& path, torch::nn::Module& stage)>;

struct LoadOptions {
  // Keys under the prefix that the module does not have are an error unless they start with one
  // of these (relative to the prefix), e.g. {"attn_pool.", "norm."} for encoder heads never run.
  std::vector<std::string> ignored_prefixes;
  // Drop each source tensor's mapped pages once copied, so a load peaks at about one copy.
  bool release_pages = true;
  // Called with each stage of the module (an element of a torch::nn::ModuleList anywhere in it:
  // a transformer block, a decoder layer) once all of the stage's tensors are written, before the
  // next stage's are read; the tensors outside every stage are written last. path is the stage's
  // module path ("layers.3"). Policy::load quantizes each layer there, so that a quantized load
  // never holds every float weight at once (docs/QUANTIZATION.md, Memory). An exception from it
  // propagates (the module is then partly loaded: the caller discards it).
  StageHook after_stage;
};

struct LoadReport {
  std::vector<std::string> missing;     // module names with no tensor in the file
  std::vector<std::string> unexpected;  // file names the module does not have
  std::vector<std::string> mismatched;  // "name: expected [a, b], found [c, d]"
  std::vector<std::string> ignored;     // file names skipped through ignored_prefixes
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string describe() const;
};

// Checks every parameter and buffer of `module` against `state[prefix + "." + name]` without
// writing anything.
LoadReport check_module(const torch::nn::Module& module, const StateDict& state, const std::string& prefix,
                        const LoadOptions& options = {});

// check_module, then (only if it is clean) copies each tensor into the module, converting dtype
// and device to the module's. Throws Error with the full report otherwise.
LoadReport load_module(torch::nn::Module& module, const StateDict& state, const std::string& prefix,
                       const LoadOptions& options = {});

std::string shape_string(c10::IntArrayRef shape);

}  // namespace focusvla::io
