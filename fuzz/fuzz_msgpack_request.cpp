// Fuzz target: the server's request decoder (serve::decode_observation, src/serve/msgpack_numpy.cpp)
// on whole request frames, as a client's websocket message reaches it. Seeds are openpi-encoded
// LIBERO requests (msgpack maps of numpy-array maps). Whatever the bytes, the answer is an
// Observation that satisfies the spec or a RequestError; a decoded observation must hold exactly
// the spec's cameras as contiguous uint8 (H, W, 3) within the side limit, a finite state of the
// spec's length and a non-blank instruction.
//
// LibTorch (for the image tensors) is not instrumented; the decoder, msgpack-cxx's parser (header
// only) and this file are, with libFuzzer coverage, ASan and UBSan.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "focusvla/serve/msgpack_numpy.h"
#include "fuzz_util.h"

namespace {

const focusvla::serve::RequestSpec& spec() {
  static const focusvla::serve::RequestSpec s = [] {
    focusvla::serve::RequestSpec r;
    r.keys = focusvla::serve::default_observation_keys(2);
    r.proprio_dim = 8;
    r.max_image_side = 64;  // small images keep each run fast; the checks are the same
    return r;
  }();
  return s;
}

void check(const focusvla::Observation& obs) {
  using focusvla::fuzz::fail;
  if (obs.images.size() != 2) fail("decoded " + std::to_string(obs.images.size()) + " images, the spec has 2");
  for (const auto& image : obs.images) {
    if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != torch::kUInt8 || !image.is_contiguous())
      fail("a decoded image is not a contiguous uint8 (H, W, 3) tensor");
    if (image.size(0) < 1 || image.size(1) < 1 || image.size(0) > 64 || image.size(1) > 64)
      fail("a decoded image is outside the side limit");
  }
  if (obs.proprio.size() != 8) fail("decoded a state of " + std::to_string(obs.proprio.size()) + " values");
  for (double v : obs.proprio)
    if (!std::isfinite(v)) fail("decoded a non-finite state value");
  if (obs.instruction.find_first_not_of(" \t\r\n") == std::string::npos) fail("decoded a blank instruction");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    check(focusvla::serve::decode_observation(reinterpret_cast<const char*>(data), size, spec()));
  } catch (const focusvla::serve::RequestError& e) {
    focusvla::fuzz::rejected(e);
  }
  return 0;
}
