#pragma once
// The promises SafetensorsFile makes about the tensors it accepts, checked by both safetensors
// fuzz targets: inside the data section, sorted by offset, non-empty ones disjoint, every byte
// count exactly dtype size x shape (no dimension >= 2^63, no 64-bit overflow).

#include <cstdint>
#include <string>
#include <vector>

#include "focusvla/io/safetensors.h"
#include "fuzz_util.h"

namespace focusvla::fuzz {

inline void check_tensors(const std::vector<io::TensorInfo>& tensors, uint64_t data_size) {
  uint64_t last_begin = 0;
  const io::TensorInfo* previous = nullptr;  // the last non-empty tensor
  for (const io::TensorInfo& t : tensors) {
    const std::string what = "tensor '" + t.name + "'";
    if (t.begin > t.end || t.end > data_size) fail(what + " lies outside the data section");
    uint64_t bytes = io::dtype_size(t.dtype);
    for (const int64_t d : t.shape) {
      if (d < 0) fail(what + ": accepted a negative shape entry (a dimension >= 2^63)");
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes))
        fail(what + ": accepted a shape whose byte count overflows 64 bits");
    }
    if (bytes != t.nbytes()) fail(what + ": byte size disagrees with dtype x shape");
    (void)t.numel();  // what the loaders call to size the tensor (UBSan checks its arithmetic)
    if (t.begin < last_begin) fail("tensors are not sorted by offset");
    last_begin = t.begin;
    if (t.nbytes() != 0) {
      if (previous != nullptr && t.begin < previous->end) fail(what + " overlaps tensor '" + previous->name + "'");
      previous = &t;
    }
  }
}

}  // namespace focusvla::fuzz
