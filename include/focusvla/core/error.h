#pragma once
// The one exception type of focusvla. Every message names the thing (a file, a key, an argument)
// and the problem, e.g. "model.safetensors: tensor 'a.b': data_offsets [0, 12) outside the 8-byte data".

#include <stdexcept>
#include <string>

namespace focusvla {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(what + ": " + problem) unless `condition` holds.
inline void check(bool condition, const std::string& what, const std::string& problem) {
  if (!condition) throw Error(what + ": " + problem);
}

}  // namespace focusvla
