#pragma once
// Reading JSON files with errors that name the file (and, for parse errors, the byte offset).

#include <nlohmann/json.hpp>

#include <string>

namespace focusvla::io {

// Parses the whole file; throws Error "<path>: cannot open" or "<path>: invalid JSON (...)" for a
// syntax error, a number beyond double range (1e500) or nesting deeper than 128 levels.
nlohmann::json read_json_file(const std::string& path);
// Parses text that came from `source` (used in messages).
nlohmann::json parse_json(const std::string& text, const std::string& source);
// Reads a whole file into a string; throws Error naming the path.
std::string read_text_file(const std::string& path);

}  // namespace focusvla::io
