#pragma once
// The policy head seam: what the Policy needs from an action head (conditioning in, a normalized
// action chunk out), and the one factory that picks the head family from the checkpoint.
//
// A family is a detector (does this state dict / config.json look like mine?) and a loader. The
// built-in family is "mlp-resnet": VLA-Adapter's L1RegressionActionHead frame with its three
// block variants (vla-adapter, vla-adapter-pro, focusvla; policy/action_head.h). A new family
// (e.g. flow matching) is one new file that implements PolicyHead and a `HeadFamily`, plus one
// line in builtin_families() (src/policy/head.cpp); a program can also register_head() its own
// at run time.

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "focusvla/core/tap.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"

namespace focusvla::policy {

// Optional outputs of PolicyHead::forward, per block, FocusVLA heads only (left empty otherwise).
struct HeadDiagnostics {
  std::vector<torch::Tensor> kept_indices;  // (B, heads, T, K) int64 positions kept by top-K (top_k > 0)
  std::vector<torch::Tensor> gates;         // element: (B, T, D); head: (B, T, heads); scalar: tanh(g) (1,)
};

class PolicyHead {
 public:
  virtual ~PolicyHead() = default;

  // visual_states: (B, L, Nv, D)  the visual states of every decoder layer (L = layers + 1, layer
  //                               0 = the input embeddings; SPEC 8)
  // query_states:  (B, L, Nq, D)  the action-query states of every layer
  // proprio_token: (B, 1, D) the projected proprio, or an undefined tensor (no proprio)
  // Inputs may have any floating dtype and device; they are converted to the head's. Returns
  // (B, chunk(), action_dim()) normalized actions in the head's dtype. Throws Error naming the
  // argument for bad shapes. `diagnostics`, when given, is cleared and filled (FocusVLA heads).
  virtual torch::Tensor forward(const torch::Tensor& visual_states, const torch::Tensor& query_states,
                                const torch::Tensor& proprio_token, HeadDiagnostics* diagnostics = nullptr) const = 0;

  virtual int64_t chunk() const = 0;       // actions per call (T)
  virtual int64_t action_dim() const = 0;  // A
  virtual int64_t hidden() const = 0;      // D of the conditioning it reads
  // The variant, as PolicySettings::head prints it: "vla-adapter", "vla-adapter-pro", "focusvla".
  virtual std::string name() const = 0;
  // The parameters (device / dtype moves, fp32 weight copies, counting).
  virtual torch::nn::Module& module() = 0;
  // Named intermediates, names relative to the head ("stem", "blocks.3", "blocks.3.kept", ...;
  // the Policy prefixes "head."). An empty Tap turns them off.
  virtual void set_tap(Tap tap) = 0;
};

// Detector: true when `state` (the head file's state dict, `module.` stripped) with `config`
// (config.json) is of this family. It should look at key names only, loosely enough that a
// damaged head of the family is still claimed (its loader then names what is wrong).
using HeadDetector = std::function<bool(const io::StateDict& state, const io::VlaConfig& config)>;
// Loader: the head, its weights copied from `state`; throws Error naming the keys on a mismatch.
using HeadLoader = std::function<std::shared_ptr<PolicyHead>(const io::StateDict& state, const io::VlaConfig& config,
                                                             const torch::TensorOptions& options)>;

struct HeadFamily {
  std::string name;         // "mlp-resnet"
  std::string description;  // what it recognizes, for the error of an unknown head
  HeadDetector detect;
  HeadLoader load;
};

// Adds a family after the registered ones. Throws Error when the name is taken or empty, or a
// function is missing. Thread-safe, as are the functions below.
void register_head(HeadFamily family);
void register_head(const std::string& family, HeadDetector detect, HeadLoader load, const std::string& description = "");
// Removes a family registered by register_head (built-in ones too); false when there is none.
bool unregister_head(const std::string& family);
// The families' names, in detection order (the built-in ones first).
std::vector<std::string> registered_heads();

// The head of a checkpoint: the one family whose detector accepts (`head_state`, `config`) loads
// it. Throws Error naming the file (the state dict's source), a few of its keys and every
// registered family with what it recognizes when none accepts, or the families when several do.
std::shared_ptr<PolicyHead> load_head(const io::StateDict& head_state, const io::VlaConfig& config,
                                      const torch::TensorOptions& options);

}  // namespace focusvla::policy
