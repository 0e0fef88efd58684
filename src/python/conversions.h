#pragma once
// What the Python module's files share: Python objects to the library's types and back.
// conversions.cpp defines them; bindings.cpp (Policy), executor_bindings.cpp (ChunkExecutor) and
// codec_bindings.cpp (the request decoder) use them.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <torch/torch.h>

#include <Eigen/Core>

#include <string>
#include <vector>

#include "focusvla/policy/policy.h"

namespace focusvla::python {

// Any array: numpy, torch (CPU or CUDA, via DLPack), anything with the buffer protocol. Made
// C-contiguous by nanobind (a copy) when it is not; dtype and shape are checked by the library.
using InputArray = nanobind::ndarray<nanobind::ro, nanobind::c_contig>;

std::string py_type_name(nanobind::handle h);
// Camera images (a list of arrays / tensors) as tensors viewing them; `keep` holds the arrays.
std::vector<torch::Tensor> image_list(nanobind::handle images, std::vector<InputArray>& keep);
// A robot state (None, a sequence of numbers or a 1-D array) as doubles (empty for None).
std::vector<double> proprio_vector(nanobind::handle proprio);
std::string instruction_string(nanobind::handle instruction);
// A Python str as UTF-8. A str that has none (a lone surrogate, e.g. from a file name decoded
// with surrogateescape) is a TypeError naming `what`, not the std::bad_cast nanobind's cast gives.
std::string utf8_text(nanobind::handle str, const std::string& what);
// Numpy arrays owning a copy of the values (a tensor's bf16 / fp16 as float32).
nanobind::object numpy_matrix(ActionChunk::Matrix&& matrix);
nanobind::object numpy_tensor(const torch::Tensor& value);
nanobind::object numpy_vector(const Eigen::VectorXd& vector);

// The module's parts beside Policy: focusvla._core.decode_request and RequestError
// (codec_bindings.cpp), SimulatedClock and ChunkExecutor (executor_bindings.cpp).
void bind_codec(nanobind::module_& m);
void bind_executor(nanobind::module_& m);

}  // namespace focusvla::python
