#include "focusvla/io/json_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "focusvla/core/error.h"

namespace focusvla::io {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw Error(path + ": read failed");
  return buffer.str();
}

namespace {

// Far deeper than any config, index or safetensors header (about 5 levels).
constexpr size_t kMaxJsonDepth = 128;

// The deepest [ / { nesting of `text` outside strings, scanning no further once past `limit`.
// nlohmann parses iteratively, but dump() and copies recurse: a header of a million '[' would
// overflow the stack in an error message.
size_t nesting_depth(const std::string& text, size_t limit) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // skip the escaped character
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return 0;  // not past the limit (the parser reports unbalanced brackets)
}

}  // namespace

nlohmann::json parse_json(const std::string& text, const std::string& source) {
  check(nesting_depth(text, kMaxJsonDepth) <= kMaxJsonDepth, source,
        "invalid JSON (nested deeper than " + std::to_string(kMaxJsonDepth) + " levels)");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e500
    throw Error(source + ": invalid JSON (" + e.what() + ")");
  }
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_text_file(path), path); }

}  // namespace focusvla::io
