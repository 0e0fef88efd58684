#pragma once
// What the Python module's source files share (bindings.cpp defines these): a tensor or a vector
// as a numpy array that owns a copy of the values.

#include <nanobind/nanobind.h>

#include <torch/torch.h>

#include <vector>

namespace focusvla::python {

// A CPU copy of `value` (bf16 / fp16 as float32).
nanobind::object to_numpy(const torch::Tensor& value);
// A float64 array of `values`.
nanobind::object to_numpy(const std::vector<double>& values);

// Registers focusvla._core.decode_request and RequestError (codec_bindings.cpp).
void bind_codec(nanobind::module_& m);

}  // namespace focusvla::python
