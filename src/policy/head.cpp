#include "focusvla/policy/head.h"

#include <mutex>
#include <set>
#include <utility>

#include "focusvla/core/error.h"
#include "focusvla/policy/action_head.h"

namespace focusvla::policy {
namespace {

// The families built in, in detection order. A new family: its file, and one line here.
std::vector<HeadFamily> builtin_families() {
  std::vector<HeadFamily> families;
  families.push_back(mlp_resnet_family());
  return families;
}

struct Registry {
  std::mutex mutex;
  std::vector<HeadFamily> families = builtin_families();
};

Registry& registry() {
  static Registry instance;
  return instance;
}

std::vector<HeadFamily> snapshot() {
  auto& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  return r.families;
}

// "model.fc1.*, model.mlp_resnet_blocks.*, ... (24 tensors)": the distinct first two name
// components, for the error of an unknown head.
std::string key_summary(const io::StateDict& state) {
  constexpr size_t kShown = 8;
  std::set<std::string> groups;
  for (const auto& key : state.keys()) {
    const auto first = key.find('.');
    const auto second = first == std::string::npos ? first : key.find('.', first + 1);
    groups.insert(second == std::string::npos ? key : key.substr(0, second) + ".*");
  }
  std::string out;
  size_t shown = 0;
  for (const auto& group : groups) {
    if (shown++ == kShown) {
      out += ", ...";
      break;
    }
    out += (out.empty() ? "" : ", ") + group;
  }
  return out + " (" + std::to_string(state.size()) + " tensors)";
}

}  // namespace

void register_head(HeadFamily family) {
  check(!family.name.empty(), "register_head", "a head family needs a name");
  check(static_cast<bool>(family.detect) && static_cast<bool>(family.load), "register_head",
        "head family '" + family.name + "' needs a detector and a loader");
  auto& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& f : r.families)
    check(f.name != family.name, "register_head", "a head family named '" + family.name + "' is already registered");
  r.families.push_back(std::move(family));
}

void register_head(const std::string& family, HeadDetector detect, HeadLoader load, const std::string& description) {
  register_head(HeadFamily{family, description, std::move(detect), std::move(load)});
}

bool unregister_head(const std::string& family) {
  auto& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (auto it = r.families.begin(); it != r.families.end(); ++it)
    if (it->name == family) {
      r.families.erase(it);
      return true;
    }
  return false;
}

std::vector<std::string> registered_heads() {
  std::vector<std::string> names;
  for (const auto& f : snapshot()) names.push_back(f.name);
  return names;
}

std::shared_ptr<PolicyHead> load_head(const io::StateDict& head_state, const io::VlaConfig& config,
                                      const torch::TensorOptions& options) {
  const std::string what = head_state.empty() ? std::string("action head") : head_state.source(head_state.keys().front());
  check(!head_state.empty(), what, "the head's state dict is empty");
  // Detectors and loaders run outside the lock: a loader may take long, and may register.
  const auto families = snapshot();
  std::vector<const HeadFamily*> matches;
  for (const auto& f : families)
    if (f.detect(head_state, config)) matches.push_back(&f);
  if (matches.empty()) {
    std::string known;
    for (const auto& f : families)
      known += (known.empty() ? "" : "; ") + f.name + (f.description.empty() ? "" : " (" + f.description + ")");
    throw Error(what + ": no registered head family recognizes this action head, keys " + key_summary(head_state) +
                "; registered families: " + (known.empty() ? "none" : known));
  }
  if (matches.size() > 1) {
    std::string names;
    for (const auto* f : matches) names += (names.empty() ? "'" : ", '") + f->name + "'";
    throw Error(what + ": several head families recognize this action head: " + names +
                " (their detectors must not overlap)");
  }
  auto head = matches.front()->load(head_state, config, options);
  check(head != nullptr, what, "head family '" + matches.front()->name + "' returned no head");
  return head;
}

}  // namespace focusvla::policy
