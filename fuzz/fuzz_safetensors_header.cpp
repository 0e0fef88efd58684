// Fuzz target: the safetensors header parser, SafetensorsFile::parse_header (the JSON text between
// the 8-byte length and the data), against a 64 KiB data section and against one of 2^64 - 1
// bytes (so that offsets and byte counts near the 64-bit limit get through to the shape checks).
// Input: the header text.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "focusvla/core/error.h"
#include "focusvla/io/safetensors.h"
#include "safetensors_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string header(reinterpret_cast<const char*>(data), size);
  for (const uint64_t data_size : {uint64_t{1} << 16, std::numeric_limits<uint64_t>::max()}) {
    std::map<std::string, std::string> metadata;
    try {
      const auto tensors =
          focusvla::io::SafetensorsFile::parse_header(header, data_size, "fuzz.safetensors", &metadata);
      focusvla::fuzz::check_tensors(tensors, data_size);
    } catch (const focusvla::Error& e) {
      focusvla::fuzz::rejected(e);
    }
  }
  return 0;
}
