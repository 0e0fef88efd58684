#include "conversions.h"

// nanobind casters: a missing one compiles and fails at run time (a TypeError), so every file of
// the module includes all that the module uses.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <optional>

#include "focusvla/core/error.h"

namespace nb = nanobind;

namespace focusvla::python {
namespace {
std::optional<torch::ScalarType> scalar_type_of(nb::dlpack::dtype d) {
  using nb::dlpack::dtype_code;
  const auto code = static_cast<dtype_code>(d.code);
  if (d.lanes != 1) return std::nullopt;
  if (code == dtype_code::UInt && d.bits == 8) return torch::kUInt8;
  if (code == dtype_code::Int) {
    switch (d.bits) {
      case 8: return torch::kInt8;
      case 16: return torch::kInt16;
      case 32: return torch::kInt32;
      case 64: return torch::kInt64;
    }
  }
  if (code == dtype_code::Float) {
    switch (d.bits) {
      case 16: return torch::kFloat16;
      case 32: return torch::kFloat32;
      case 64: return torch::kFloat64;
    }
  }
  if (code == dtype_code::Bfloat && d.bits == 16) return torch::kBFloat16;
  if (code == dtype_code::Bool) return torch::kBool;
  return std::nullopt;
}

// One camera image: a torch::Tensor viewing the array's memory (valid while `keep` holds it).
// A CPU torch tensor as the numpy array sharing its memory: nanobind's DLPack path for tensors
// costs ~30 us per image, the buffer protocol of Tensor.numpy() a few. Anything else as is.
nb::object via_numpy_if_cpu_tensor(nb::handle object) {
  static const nb::handle tensor_type = nb::object(nb::module_::import_("torch").attr("Tensor")).release();
  if (nb::isinstance(object, tensor_type) && nb::cast<bool>(object.attr("is_cpu")) &&
      !nb::cast<bool>(object.attr("requires_grad")))
    return object.attr("numpy")();
  return nb::borrow(object);
}

torch::Tensor image_tensor(nb::handle original, size_t index, std::vector<InputArray>& keep) {
  const std::string what = "images[" + std::to_string(index) + "]";
  const nb::object object = via_numpy_if_cpu_tensor(original);
  InputArray array;
  if (!nb::try_cast<InputArray>(object, array, true)) {
    throw nb::type_error((what + ": expected an H x W x 3 uint8 numpy array or torch tensor, got " +
                          py_type_name(original)).c_str());
  }
  const auto dtype = scalar_type_of(array.dtype());
  if (!dtype) throw nb::type_error((what + ": unsupported array dtype").c_str());
  std::vector<int64_t> shape(array.ndim());
  for (size_t i = 0; i < array.ndim(); ++i) shape[i] = static_cast<int64_t>(array.shape(i));
  torch::Device device = torch::kCPU;
  if (array.device_type() == nb::device::cuda::value) {
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(array.device_id()));
  } else if (array.device_type() != nb::device::cpu::value) {
    throw nb::type_error((what + ": arrays on the CPU or a CUDA device only").c_str());
  }
  torch::Tensor tensor = torch::from_blob(const_cast<void*>(array.data()), shape,
                                          torch::TensorOptions().dtype(*dtype).device(device));
  keep.push_back(std::move(array));
  return tensor;
}

}  // namespace

std::string py_type_name(nb::handle h) { return nb::type_name(h.type()).c_str(); }

std::vector<torch::Tensor> image_list(nb::handle images, std::vector<InputArray>& keep) {
  if (!nb::isinstance<nb::list>(images) && !nb::isinstance<nb::tuple>(images)) {
    throw nb::type_error(("images: expected a list of H x W x 3 uint8 arrays (one per camera), got " +
                          py_type_name(images)).c_str());
  }
  std::vector<torch::Tensor> out;
  size_t i = 0;
  for (nb::handle item : images) out.push_back(image_tensor(item, i++, keep));
  return out;
}

std::vector<double> proprio_vector(nb::handle proprio) {
  if (proprio.is_none()) return {};
  // Arrays and tensors (any numeric dtype, 1-D) first, then any sequence of numbers.
  nb::ndarray<nb::ro> array;
  if (nb::try_cast<nb::ndarray<nb::ro>>(proprio, array, false) && array.device_type() == nb::device::cpu::value) {
    if (array.ndim() != 1) {
      throw nb::type_error(("proprio: expected a 1-D array, got " + std::to_string(array.ndim()) + " dimensions").c_str());
    }
    const auto dtype = scalar_type_of(array.dtype());
    if (!dtype) throw nb::type_error("proprio: unsupported array dtype");
    const torch::Tensor view = torch::from_blob(const_cast<void*>(array.data()), {static_cast<int64_t>(array.shape(0))},
                                                {static_cast<int64_t>(array.stride(0))}, torch::dtype(*dtype));
    const torch::Tensor values = view.to(torch::kFloat64).contiguous();
    return std::vector<double>(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
  }
  std::vector<double> values;
  if (nb::isinstance<nb::str>(proprio) || !nb::try_cast<std::vector<double>>(proprio, values, true)) {
    throw nb::type_error(("proprio: expected a sequence of numbers or a 1-D array, got " + py_type_name(proprio)).c_str());
  }
  return values;
}

std::string instruction_string(nb::handle instruction) {
  if (!nb::isinstance<nb::str>(instruction)) {
    throw nb::type_error(("instruction: expected a str, got " + py_type_name(instruction)).c_str());
  }
  return utf8_text(instruction, "instruction");
}

std::string utf8_text(nb::handle str, const std::string& what) {
  Py_ssize_t size = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(str.ptr(), &size);
  if (utf8 == nullptr) {
    const nb::python_error error;  // takes (and clears) Python's UnicodeEncodeError
    throw nb::type_error((what + ": not encodable as UTF-8 text (" + std::string(error.what()) + ")").c_str());
  }
  return std::string(utf8, static_cast<size_t>(size));
}

// A numpy array owning a copy of `matrix` (moved to the heap, freed with the array).
nb::object numpy_matrix(ActionChunk::Matrix&& matrix) {
  auto* owned = new ActionChunk::Matrix(std::move(matrix));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<ActionChunk::Matrix*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, double, nb::ndim<2>>(
      owned->data(), {static_cast<size_t>(owned->rows()), static_cast<size_t>(owned->cols())}, owner));
}

// A numpy array of a tensor's values (a CPU copy; bf16 / fp16 as float32).
nb::object numpy_tensor(const torch::Tensor& value) {
  torch::Tensor t = value.detach().to(torch::kCPU);
  if (t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kFloat16) t = t.to(torch::kFloat32);
  t = t.contiguous().clone();
  auto* owned = new torch::Tensor(t);
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<torch::Tensor*>(p); });
  std::vector<size_t> shape(t.sizes().begin(), t.sizes().end());
  nb::dlpack::dtype dtype;
  switch (t.scalar_type()) {
    case torch::kFloat32: dtype = nb::dtype<float>(); break;
    case torch::kFloat64: dtype = nb::dtype<double>(); break;
    case torch::kInt64: dtype = nb::dtype<int64_t>(); break;
    case torch::kInt32: dtype = nb::dtype<int32_t>(); break;
    case torch::kUInt8: dtype = nb::dtype<uint8_t>(); break;
    case torch::kBool: dtype = nb::dtype<bool>(); break;
    default: {
      *owned = owned->to(torch::kFloat32);
      dtype = nb::dtype<float>();
    }
  }
  return nb::cast(nb::ndarray<nb::numpy>(owned->data_ptr(), shape.size(), shape.data(), owner, nullptr, dtype));
}

nb::object numpy_vector(const Eigen::VectorXd& vector) {
  auto* owned = new Eigen::VectorXd(vector);
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<Eigen::VectorXd*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, double, nb::ndim<1>>(owned->data(), {static_cast<size_t>(owned->size())}, owner));
}

}  // namespace focusvla::python
