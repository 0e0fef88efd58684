#include "focusvla/vision/image_encoder.h"

#include <mutex>

#include "focusvla/core/error.h"

namespace focusvla::vision {

// The built-in encoder kinds, each defined in its own file. A new kind adds its line here.
EncoderRegistration vit_encoder_registration();  // vit.cpp: timm VisionTransformer (DINOv2, SigLIP)

namespace {

struct Registry {
  std::mutex mutex;
  std::vector<EncoderRegistration> kinds;
};

Registry& registry() {
  static Registry* r = [] {
    auto* out = new Registry;  // never destroyed: usable from static destructors
    out->kinds.push_back(vit_encoder_registration());
    return out;
  }();
  return *r;
}

}  // namespace

void register_encoder(EncoderRegistration registration) {
  check(!registration.kind.empty(), "register_encoder", "the kind needs a name");
  check(!registration.timm_id_prefixes.empty(), "register_encoder",
        "kind '" + registration.kind + "' names no timm model id prefix");
  check(static_cast<bool>(registration.configure), "register_encoder",
        "kind '" + registration.kind + "' has no configure function");
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  for (auto& existing : r.kinds) {
    if (existing.kind == registration.kind) {
      existing = std::move(registration);
      return;
    }
  }
  r.kinds.push_back(std::move(registration));
}

std::vector<std::string> registered_encoder_kinds() {
  Registry& r = registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> out;
  for (const auto& k : r.kinds) out.push_back(k.kind);
  return out;
}

EncoderConfig::EncoderConfig(std::string name_, std::string timm_model_id_, std::unique_ptr<EncoderParams> params)
    : name(std::move(name_)), timm_model_id(std::move(timm_model_id_)), params_(std::move(params)) {
  check(params_ != nullptr, "vision encoder '" + name + "'", "no parameters");
}

EncoderConfig::EncoderConfig(const EncoderConfig& other)
    : name(other.name), timm_model_id(other.timm_model_id), params_(other.params_->clone()) {}

EncoderConfig& EncoderConfig::operator=(const EncoderConfig& other) {
  if (this != &other) {
    name = other.name;
    timm_model_id = other.timm_model_id;
    params_ = other.params_->clone();
  }
  return *this;
}

EncoderConfig EncoderConfig::from_timm_id(const std::string& timm_model_id, int64_t image_size, std::string name) {
  std::function<std::unique_ptr<EncoderParams>(const std::string&, int64_t)> configure;
  std::string known;
  {
    Registry& r = registry();
    const std::lock_guard<std::mutex> lock(r.mutex);
    size_t best = 0;
    for (const auto& kind : r.kinds) {
      for (const auto& prefix : kind.timm_id_prefixes) {
        known += (known.empty() ? "" : ", ") + prefix + "* (" + kind.kind + ")";
        if (timm_model_id.rfind(prefix, 0) == 0 && prefix.size() > best) {
          best = prefix.size();
          configure = kind.configure;
        }
      }
    }
  }
  if (!configure)
    throw Error("timm model id '" + timm_model_id + "': no registered vision encoder builds it (registered: " + known +
                ")");
  auto params = configure(timm_model_id, image_size);
  check(params != nullptr, "timm model id '" + timm_model_id + "'", "its encoder kind returned no parameters");
  return EncoderConfig(std::move(name), timm_model_id, std::move(params));
}

io::LoadOptions EncoderConfig::load_options() const {
  io::LoadOptions options;
  options.ignored_prefixes = params_->unused_prefixes();
  return options;
}

}  // namespace focusvla::vision
