// focusvla._core.decode_request: openpi's request decoder for the Ray app, the server's own
// (src/serve/msgpack_numpy.cpp: the one `focusvla serve` runs and the fuzzer exercises), so the two
// front ends accept the same requests and answer the same errors.

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include "conversions.h"
#include "focusvla/serve/msgpack_numpy.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace focusvla::python {

void bind_codec(nb::module_& m) {
  // After Error's registration: nanobind tries the later translator first, so a RequestError is
  // this type (a ValueError), every other focusvla error stays focusvla.Error.
  nb::exception<serve::RequestError>(m, "RequestError", PyExc_ValueError);
  m.def(
      "decode_request",
      [](nb::bytes frame, const std::vector<std::string>& image_keys, std::optional<std::string> state_key,
         const std::string& prompt_key, int64_t proprio_dim, int64_t max_image_side, size_t max_prompt_bytes) {
        serve::RequestSpec spec;
        spec.keys.images = image_keys;
        if (state_key) spec.keys.state = *state_key;
        spec.keys.prompt = prompt_key;
        spec.proprio_dim = proprio_dim;
        spec.max_image_side = max_image_side;
        spec.max_prompt_bytes = max_prompt_bytes;
        Observation observation;
        {
          nb::gil_scoped_release release;  // `frame` stays referenced by the call's arguments
          observation = serve::decode_observation(frame.c_str(), frame.size(), spec);
        }
        nb::list images;
        for (const auto& image : observation.images) images.append(numpy_tensor(image));
        nb::dict out;
        out["images"] = images;
        out["instruction"] = observation.instruction;
        out["proprio"] = proprio_dim > 0 ? numpy_vector(Eigen::Map<const Eigen::VectorXd>(
                                               observation.proprio.data(),
                                               static_cast<Eigen::Index>(observation.proprio.size())))
                                         : nb::none();
        return out;
      },
      "frame"_a, "image_keys"_a, "state_key"_a.none(), "prompt_key"_a, "proprio_dim"_a, "max_image_side"_a = 4096,
      "max_prompt_bytes"_a = 4096,
      "One openpi request frame -> {\"images\": [uint8 (H, W, 3)], \"instruction\": str, \"proprio\": float64 or "
      "None}, decoded and checked exactly as `focusvla serve` does; RequestError (a ValueError) naming the key "
      "and the problem otherwise.");
}

}  // namespace focusvla::python
