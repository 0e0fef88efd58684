#pragma once
// What read_torch_state_dict promises about the tensors it returns, checked by both pickle fuzz
// targets: every element of every view lies inside its storage. The byte at the far end of each
// view is read by this (instrumented) code, so AddressSanitizer sees a view that reaches past
// its storage even when the arithmetic check above it were wrong.

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_util.h"

namespace focusvla::fuzz {

inline void check_state_dict(const std::vector<std::pair<std::string, torch::Tensor>>& entries) {
  volatile uint8_t sink = 0;
  for (const auto& [name, t] : entries) {
    const std::string what = "tensor '" + name + "'";
    if (!t.defined()) fail(what + " is undefined");
    if (t.numel() == 0) continue;
    int64_t last = 0;  // offset of the last element from the first, in elements
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (t.size(d) < 0 || t.stride(d) < 0) fail(what + ": negative size or stride");
      int64_t step = 0;
      if (__builtin_mul_overflow(t.size(d) - 1, t.stride(d), &step) || __builtin_add_overflow(last, step, &last))
        fail(what + ": the view's extent overflows 64 bits");
    }
    const auto element = static_cast<int64_t>(t.element_size());
    int64_t end_bytes = 0;
    if (__builtin_add_overflow(t.storage_offset(), last + 1, &end_bytes) ||
        __builtin_mul_overflow(end_bytes, element, &end_bytes) ||
        end_bytes > static_cast<int64_t>(t.storage().nbytes()))
      fail(what + ": the view reaches past its storage of " + std::to_string(t.storage().nbytes()) + " bytes");
    const auto* first = static_cast<const uint8_t*>(t.data_ptr());
    sink = sink + first[0] + first[last * element + element - 1];
  }
  (void)sink;
}

}  // namespace focusvla::fuzz
