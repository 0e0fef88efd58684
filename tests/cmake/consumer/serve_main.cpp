// Uses the installed server library (focusvla::serve) without Boost or msgpack-cxx of its own:
// the openpi request decoder refuses a frame that is not msgpack, naming the problem.
#include <cstdio>
#include <string>

#include "focusvla/core/error.h"
#include "focusvla/serve/msgpack_numpy.h"

int main() {
  const std::string frame = "not msgpack";
  focusvla::serve::RequestSpec spec;
  spec.keys = focusvla::serve::default_observation_keys(2);
  try {
    focusvla::serve::decode_observation(frame.data(), frame.size(), spec);
  } catch (const focusvla::Error& e) {
    std::printf("focusvla::serve refused a malformed frame: %s\n", e.what());
    return 0;
  }
  std::fprintf(stderr, "a malformed frame was accepted\n");
  return 1;
}
