#pragma once
// openpi's wire format (openpi_client/msgpack_numpy.py): a request is a msgpack map; a numpy array
// is a map {b"__ndarray__": true, b"data": <bytes>, b"dtype": "<f4", b"shape": [...]} and a numpy
// scalar {b"__npgeneric__": true, b"data": <value>, b"dtype": "<f8"}, the marker keys being bin
// (Python bytes), not str. This module turns a request into an Observation for Policy::act_batch
// and a reply / metadata into bytes that openpi's unpackb reads back as numpy arrays.
//
// Decoding never trusts the frame: sizes are checked against the frame before any copy, nesting
// and container sizes are limited, and every problem is a RequestError naming the key, e.g.
// "observation/image: expected a uint8 (H, W, 3) image, got float32 (224, 224, 3)".

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/policy.h"

namespace focusvla::serve {

// Where an observation's parts are in a request map. A key is looked up literally first, then as
// a path through nested maps ("observation/image" -> obs["observation"]["image"]).
struct ObservationKeys {
  std::vector<std::string> images;  // one per camera, in the checkpoint's order
  std::string state = "observation/state";
  std::string prompt = "prompt";
};

// openpi's LIBERO example's keys for a policy with `cameras` cameras: observation/image,
// observation/wrist_image. More than two cameras have no default (throws Error).
ObservationKeys default_observation_keys(int64_t cameras);

// What a request must hold for one policy.
struct RequestSpec {
  ObservationKeys keys;
  int64_t proprio_dim = 0;        // 0: the policy has no proprio projector and the state key is ignored
  int64_t max_image_side = 4096;  // larger images are refused before any copy
  size_t max_prompt_bytes = 4096;  // longer instructions are refused before any copy (a LIBERO one is ~60)
};

// A request the server cannot run. The message names the key and the problem.
class RequestError : public Error {
 public:
  explicit RequestError(const std::string& message) : Error(message) {}
};

// Decodes one request frame. Throws RequestError on invalid msgpack, trailing bytes, a missing or
// mistyped key, an image that is not uint8 (H, W, 3), a state of the wrong length or with NaN /
// Inf, an empty, over-long (max_prompt_bytes), non-UTF-8 or non-string prompt. Unknown keys are ignored.
Observation decode_observation(const char* data, size_t size, const RequestSpec& spec);

// A reply: {"actions": float64 ndarray (chunk, action_dim), "server_timing": {name: float}}.
// Actions go out as float64, the precision Policy computes them in after un-normalization.
std::string encode_reply(const ActionChunk::Matrix& actions,
                         const std::vector<std::pair<std::string, double>>& server_timing);

// Any JSON value as msgpack (objects as maps with str keys, as openpi's metadata).
std::string encode_json(const nlohmann::json& value);

}  // namespace focusvla::serve
