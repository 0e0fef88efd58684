// focusvla._core: the Python binding of focusvla::Policy and runtime::ChunkExecutor (nanobind). The Python package
// (python/focusvla/__init__.py) imports torch first and re-exports what is here; __init__.pyi
// documents it.
//
// Inputs are converted while the GIL is held (images to torch::Tensor views of the caller's
// memory: zero copy for C-contiguous arrays and tensors, one contiguous copy otherwise); load,
// act and act_batch then run with the GIL released. focusvla::Error becomes focusvla.Error (a
// RuntimeError subclass) with the library's message.

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "conversions.h"
#include "focusvla/core/error.h"
#include "focusvla/policy/explain.h"
#include "focusvla/policy/option_text.h"
#include "focusvla/policy/quantize_audit.h"
#include "focusvla/policy/policy.h"
#include "focusvla/runtime/chunk_executor.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using focusvla::ActionChunk;
using focusvla::Error;
using focusvla::Observation;
using focusvla::Policy;

// Any array: numpy, torch (CPU or CUDA, via DLPack), anything with the buffer protocol. Made
// C-contiguous by nanobind (a copy) when it is not; dtype and shape are checked by the library.
using InputArray = nb::ndarray<nb::ro, nb::c_contig>;

std::string py_type_name(nb::handle h) { return nb::type_name(h.type()).c_str(); }

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
  return nb::cast<std::string>(instruction);
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


// One observation from Python arguments (explain, compare_quantize); `keep` holds the arrays the
// image tensors view.
Observation observation_of(nb::handle images, nb::handle instruction, nb::handle proprio, std::vector<InputArray>& keep) {
  Observation obs;
  obs.images = image_list(images, keep);
  obs.instruction = instruction_string(instruction);
  obs.proprio = proprio_vector(proprio);
  return obs;
}

nb::dict settings_dict(const focusvla::PolicySettings& s) {
  nb::dict d;
  d["head"] = s.head;
  d["prompt_format"] = s.prompt_format;
  d["prompt_format_source"] = s.prompt_format_source;
  d["center_crop"] = s.center_crop;
  d["jpeg_roundtrip"] = s.jpeg_roundtrip;
  d["dtype"] = focusvla::dtype_name(s.dtype);
  d["dtype_source"] = s.dtype_source;
  d["device"] = s.device.str();
  d["matmul"] = s.matmul;
  d["unnorm_key"] = s.unnorm_key;
  d["normalization"] = s.normalization;
  d["cameras"] = s.cameras;
  d["proprio_dim"] = s.proprio_dim;
  d["chunk"] = s.chunk;
  d["action_dim"] = s.action_dim;
  d["quantize"] = s.quantize;
  d["quantized_layers"] = s.quantized_layers;
  d["quantize_detail"] = s.quantize_detail;
  return d;
}

// A JSON value as Python objects (dict, list, str, int, float, bool, None).
nb::object py_json(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      nb::dict d;
      for (const auto& [key, value] : j.items()) d[key.c_str()] = py_json(value);
      return d;
    }
    case nlohmann::json::value_t::array: {
      nb::list l;
      for (const auto& value : j) l.append(py_json(value));
      return l;
    }
    case nlohmann::json::value_t::string: return nb::cast(j.get<std::string>());
    case nlohmann::json::value_t::boolean: return nb::cast(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return nb::cast(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return nb::cast(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float: return nb::cast(j.get<double>());
    default: return nb::none();
  }
}

nb::dict timing_dict(const focusvla::StageTiming& t) {
  nb::dict d;
  d["preprocess_ms"] = t.preprocess_ms;
  d["vision_ms"] = t.vision_ms;
  d["projector_ms"] = t.projector_ms;
  d["llm_ms"] = t.llm_ms;
  d["head_ms"] = t.head_ms;
  d["total_ms"] = t.total_ms;
  d["device_ms"] = t.device_ms;
  d["cuda_graph"] = t.cuda_graph;
  return d;
}

nb::object result(const Policy& policy, ActionChunk&& chunk, bool return_info) {
  nb::object actions = numpy_matrix(std::move(chunk.actions));
  if (!return_info) return actions;
  nb::dict info;
  info["timing"] = timing_dict(chunk.timing);
  info["normalized"] = numpy_matrix(std::move(chunk.normalized));
  info["settings"] = settings_dict(policy.settings());
  if (policy.options().diagnostics) {
    nb::list kept, gates;
    for (const auto& t : chunk.kept_indices) kept.append(numpy_tensor(t));
    for (const auto& t : chunk.gates) gates.append(numpy_tensor(t));
    info["kept_indices"] = kept;
    info["gates"] = gates;
  }
  return nb::make_tuple(actions, info);
}

// A str, or a torch.device / torch.dtype (their str()); None is "".
std::string option_text(nb::handle value) {
  if (value.is_none()) return "";
  return nb::isinstance<nb::str>(value) ? nb::cast<std::string>(value) : nb::cast<std::string>(nb::str(value));
}

Observation observation(nb::handle item, size_t index, std::vector<InputArray>& keep) {
  nb::object images, instruction, proprio = nb::none();
  if (nb::isinstance<nb::dict>(item)) {
    nb::dict d = nb::borrow<nb::dict>(item);
    for (auto [key, value] : d) {
      const std::string k = nb::isinstance<nb::str>(key) ? nb::cast<std::string>(key) : std::string("?");
      if (k != "images" && k != "instruction" && k != "proprio") {
        throw nb::type_error(("observations[" + std::to_string(index) + "]: unknown key '" +
                              nb::cast<std::string>(nb::repr(key)) + "' (expected images, instruction, proprio)").c_str());
      }
    }
    if (!d.contains("images") || !d.contains("instruction")) {
      throw nb::type_error(("observations[" + std::to_string(index) + "]: a dict needs 'images' and 'instruction'").c_str());
    }
    images = d["images"];
    instruction = d["instruction"];
    if (d.contains("proprio")) proprio = d["proprio"];
  } else if (nb::isinstance<nb::tuple>(item) && (nb::len(item) == 2 || nb::len(item) == 3)) {
    images = item[0];
    instruction = item[1];
    if (nb::len(item) == 3) proprio = item[2];
  } else {
    throw nb::type_error(("observations[" + std::to_string(index) +
                          "]: expected a dict {'images', 'instruction', 'proprio'} or a tuple "
                          "(images, instruction[, proprio]), got " + py_type_name(item)).c_str());
  }
  Observation obs;
  obs.images = image_list(images, keep);
  obs.instruction = instruction_string(instruction);
  obs.proprio = proprio_vector(proprio);
  return obs;
}

// ---------------------------------------------------------------------------------------------
// The chunk executor

namespace rt = focusvla::runtime;

// A (rows, cols) float64 matrix from whatever a Python policy returned (numpy.asarray first).
ActionChunk::Matrix chunk_matrix(nb::handle value) {
  static const nb::handle asarray = nb::object(nb::module_::import_("numpy").attr("asarray")).release();
  const std::string what = "policy: the callable must return a (chunk, action_dim) array of numbers, got ";
  nb::object array;
  try {
    array = asarray(value, "dtype"_a = "float64");
  } catch (const nb::python_error& e) {
    throw Error(what + py_type_name(value) + " (" + e.what() + ")");
  }
  nb::ndarray<nb::ro, double, nb::ndim<2>, nb::c_contig, nb::device::cpu> m;
  if (!nb::try_cast(array, m, true)) {
    throw Error(what + py_type_name(value) + " of shape " + nb::cast<std::string>(nb::str(array.attr("shape"))));
  }
  ActionChunk::Matrix out(static_cast<Eigen::Index>(m.shape(0)), static_cast<Eigen::Index>(m.shape(1)));
  if (out.size() > 0) std::memcpy(out.data(), m.data(), sizeof(double) * static_cast<size_t>(out.size()));
  return out;
}

nb::object numpy_vector(const Eigen::VectorXd& vector) {
  auto* owned = new Eigen::VectorXd(vector);
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<Eigen::VectorXd*>(p); });
  return nb::cast(nb::ndarray<nb::numpy, double, nb::ndim<1>>(owned->data(), {static_cast<size_t>(owned->size())}, owner));
}

// A Python callable as the executor's policy: called (with the GIL) as
// callable(images: list of numpy arrays, instruction: str, proprio: numpy array or None), on the
// ticking thread or the worker. Its exceptions travel as nb::python_error and come back to Python
// as the exception it raised.
rt::InferFn python_infer(nb::handle callable) {
  auto shared = std::shared_ptr<nb::object>(new nb::object(nb::borrow(callable)), [](nb::object* p) {
    nb::gil_scoped_acquire gil;
    delete p;
  });
  return [shared](const Observation& o) {
    nb::gil_scoped_acquire gil;
    nb::list images;
    for (const auto& image : o.images) images.append(numpy_tensor(image));
    nb::object proprio = nb::none();
    if (!o.proprio.empty()) {
      ActionChunk::Matrix row(1, static_cast<Eigen::Index>(o.proprio.size()));
      for (size_t i = 0; i < o.proprio.size(); ++i) row(0, static_cast<Eigen::Index>(i)) = o.proprio[i];
      proprio = numpy_matrix(std::move(row)).attr("reshape")(-1);
    }
    return chunk_matrix((*shared)(images, o.instruction, proprio));
  };
}

// The Python object: closing (and destruction) releases the GIL, which a worker running a Python
// policy needs to finish.
struct PyExecutor {
  std::unique_ptr<rt::ChunkExecutor> executor;

  ~PyExecutor() { close(); }
  void close() {
    if (!executor) return;
    nb::gil_scoped_release release;
    executor->close();
  }
  rt::ChunkExecutor& get() {
    if (!executor) throw Error("ChunkExecutor: used after close()");
    return *executor;
  }
};

nb::dict metrics_dict(const rt::ExecutorMetrics& m) {
  nb::dict d;
  d["ticks"] = m.ticks;
  d["inferences"] = m.inferences;
  d["failed_inferences"] = m.failed_inferences;
  d["deadline_misses"] = m.deadline_misses;
  d["held_ticks"] = m.held_ticks;
  d["dropped_steps"] = m.dropped_steps;
  d["merged_steps"] = m.merged_steps;
  d["inference_p50_ms"] = m.inference_p50_ms;
  d["inference_p99_ms"] = m.inference_p99_ms;
  d["inference_max_ms"] = m.inference_max_ms;
  d["jitter_p50_ms"] = m.jitter_p50_ms;
  d["jitter_p99_ms"] = m.jitter_p99_ms;
  d["jitter_max_ms"] = m.jitter_max_ms;
  d["staleness_mean_ms"] = m.staleness_mean_ms;
  d["staleness_max_ms"] = m.staleness_max_ms;
  d["staleness_mean_ticks"] = m.staleness_mean_ticks;
  d["staleness_max_ticks"] = m.staleness_max_ticks;
  return d;
}

nb::dict tick_dict(const rt::TickReport& r) {
  nb::dict d;
  d["tick"] = r.tick;
  d["held"] = r.held;
  d["inferred_inline"] = r.inferred_inline;
  d["inference_started"] = r.inference_started;
  d["chunk_landed"] = r.chunk_landed;
  d["landed_from_tick"] = r.landed_from_tick;
  d["dropped_steps"] = r.dropped_steps;
  d["merged_steps"] = r.merged_steps;
  d["predictions"] = r.predictions;
  d["deadline_misses"] = r.deadline_misses;
  d["source_tick"] = r.source_tick;
  d["staleness_ms"] = r.staleness_ms;
  return d;
}

nb::dict options_dict(const rt::ExecutorOptions& o) {
  nb::dict d;
  d["mode"] = rt::mode_name(o.mode);
  d["hz"] = o.hz;
  d["execute_steps"] = o.execute_steps;
  d["threshold"] = o.threshold;
  d["aggregate"] = rt::aggregate_name(o.aggregate);
  d["new_weight"] = o.new_weight;
  d["ensemble_m"] = o.ensemble_m;
  d["metrics_window"] = o.metrics_window;
  return d;
}

}  // namespace

namespace focusvla::python {
nb::object to_numpy(const torch::Tensor& value) { return numpy_tensor(value); }
nb::object to_numpy(const std::vector<double>& values) {
  return numpy_vector(Eigen::Map<const Eigen::VectorXd>(values.data(), static_cast<Eigen::Index>(values.size())));
}
}  // namespace focusvla::python

NB_MODULE(_core, m) {
  m.doc() = "focusvla: LibTorch inference for FocusVLA / VLA-Adapter robot policies (native module)";
  m.attr("__version__") = FOCUSVLA_VERSION;
  m.attr("__torch_version__") = FOCUSVLA_TORCH_VERSION;

  nb::exception<Error>(m, "Error", PyExc_RuntimeError);
  focusvla::python::bind_codec(m);

  m.def("canonical_option", &focusvla::canonical_option, "option"_a, "text"_a, "what"_a,
        "The canonical spelling of a policy option's text (docs/OPTIONS.md), checked for spelling only; "
        "focusvla.Error naming `what` otherwise. The CLI, the C ABI and Policy.load accept the same spellings.");
  nb::class_<Policy>(m, "Policy")
      .def_static(
          "load",
          [](const std::string& path, nb::handle device, nb::handle dtype, std::optional<std::string> unnorm_key,
             const std::string& prompt_format, bool center_crop, int threads, bool cuda_graphs, int64_t num_images,
             const std::string& normalization, bool diagnostics, const std::string& cpu_bf16_matmul,
             const std::string& quantize,
             bool jpeg_roundtrip) {
            focusvla::PolicyOptions o;
            o.device = focusvla::parse_device(option_text(device), "device");
            o.dtype = focusvla::parse_dtype(option_text(dtype), "dtype");
            o.unnorm_key = unnorm_key.value_or("");
            o.prompt_format = focusvla::check_prompt_format(prompt_format, "prompt_format");
            o.center_crop = center_crop;
            o.jpeg_roundtrip = jpeg_roundtrip;
            o.threads = threads;
            o.cuda_graphs = cuda_graphs;
            o.num_images = num_images;
            o.normalization = focusvla::check_normalization(normalization, "normalization");
            o.diagnostics = diagnostics;
            o.cpu_bf16_matmul = focusvla::parse_cpu_bf16_matmul(cpu_bf16_matmul, "cpu_bf16_matmul");
            o.quantize = focusvla::parse_quantize(quantize, "quantize");
            nb::gil_scoped_release release;
            return Policy::load(path, o);
          },
          "path"_a, "device"_a = "cpu", "dtype"_a = nb::none(), "unnorm_key"_a = nb::none(),
          "prompt_format"_a = "auto", "center_crop"_a = true, "threads"_a = 0, "cuda_graphs"_a = true,
          "num_images"_a = 0, "normalization"_a = "bounds_q99", "diagnostics"_a = false,
          "cpu_bf16_matmul"_a = "auto", "quantize"_a = "none", "jpeg_roundtrip"_a = true)
      .def(
          "act",
          [](const Policy& self, nb::handle images, nb::handle instruction, nb::handle proprio, bool return_info) {
            std::vector<InputArray> keep;
            const std::vector<torch::Tensor> tensors = image_list(images, keep);
            const std::string text = instruction_string(instruction);
            const std::vector<double> state = proprio_vector(proprio);
            ActionChunk chunk;
            {
              nb::gil_scoped_release release;
              chunk = self.act(tensors, text, state);
            }
            return result(self, std::move(chunk), return_info);
          },
          "images"_a, "instruction"_a, "proprio"_a = nb::none(), "return_info"_a = false)
      .def(
          "act_batch",
          [](const Policy& self, nb::handle observations, bool return_info) {
            if (!nb::isinstance<nb::list>(observations) && !nb::isinstance<nb::tuple>(observations)) {
              throw nb::type_error(("observations: expected a list of dicts or tuples, got " +
                                    py_type_name(observations)).c_str());
            }
            std::vector<InputArray> keep;
            std::vector<Observation> batch;
            size_t i = 0;
            for (nb::handle item : observations) batch.push_back(observation(item, i++, keep));
            std::vector<ActionChunk> chunks;
            {
              nb::gil_scoped_release release;
              chunks = self.act_batch(batch);
            }
            nb::list out;
            for (auto& chunk : chunks) out.append(result(self, std::move(chunk), return_info));
            return out;
          },
          "observations"_a, "return_info"_a = false)
      .def(
          "explain",
          [](const Policy& self, nb::handle images, nb::handle instruction, nb::handle proprio, bool reliance,
             bool per_block, int gray) {
            if (gray < 0 || gray > 255) throw Error("gray: " + std::to_string(gray) + " is outside 0 .. 255");
            std::vector<InputArray> keep;
            const Observation obs = observation_of(images, instruction, proprio, keep);
            focusvla::ExplainOptions options;
            options.reliance = reliance;
            options.per_block = per_block;
            options.gray = static_cast<uint8_t>(gray);
            nlohmann::json j;
            {
              nb::gil_scoped_release release;
              j = focusvla::explanation_json(focusvla::explain(self, obs, options));
            }
            return py_json(j);
          },
          "images"_a, "instruction"_a, "proprio"_a = nb::none(), "reliance"_a = true, "per_block"_a = false,
          "gray"_a = 128)
      .def(
          "compare_quantize",
          [](const Policy& self, const Policy& quantized, nb::handle images, nb::handle instruction, nb::handle proprio) {
            std::vector<InputArray> keep;
            const Observation obs = observation_of(images, instruction, proprio, keep);
            nlohmann::json j;
            {
              nb::gil_scoped_release release;
              j = focusvla::audit_json(focusvla::audit_quantization(self, quantized, obs));
            }
            return py_json(j);
          },
          "quantized"_a, "images"_a, "instruction"_a, "proprio"_a = nb::none(),
          "The focus audit (policy/quantize_audit.h): this policy against `quantized` (the same checkpoint loaded "
          "with quantize=...) on one observation: per head block the Jaccard overlap of the kept top-K patch sets "
          "and the gate change, and the action difference in units of the action range.")
      .def_prop_ro("num_images", &Policy::num_images)
      .def_prop_ro("chunk_size", &Policy::chunk_size)
      .def_prop_ro("action_dim", &Policy::action_dim)
      .def_prop_ro("proprio_dim", &Policy::proprio_dim)
      .def_prop_ro("head_kind", &Policy::head_kind)
      .def_prop_ro("unnorm_key", [](const Policy& self) { return self.unnorm_key(); })
      .def_prop_ro("settings", [](const Policy& self) { return settings_dict(self.settings()); })
      .def_prop_ro("last_execution",
                   [](const Policy& self) {
                     // The policy lock may be held by a whole forward: wait for it without the GIL.
                     nb::gil_scoped_release release;
                     return self.last_execution();
                   })
      .def(
          "prompt",
          [](const Policy& self, const std::string& instruction) {
            focusvla::PromptText p = self.prompt(instruction);
            return std::make_pair(p.text, p.ids);
          },
          "instruction"_a)
      .def(
          "set_tap",
          [](Policy& self, nb::object callback) {
            // set_tap takes the policy lock, which an act in another thread holds for a whole
            // forward (and whose tap needs the GIL): wait for it without the GIL.
            if (callback.is_none()) {
              nb::gil_scoped_release release;
              self.set_tap({});
              return;
            }
            if (!PyCallable_Check(callback.ptr())) throw nb::type_error("set_tap: expected a callable or None");
            // Called from act (GIL released): take the GIL, hand over a numpy copy.
            auto shared = std::shared_ptr<nb::object>(new nb::object(callback), [](nb::object* p) {
              nb::gil_scoped_acquire gil;
              delete p;
            });
            focusvla::Tap tap = [shared](const std::string& name, const torch::Tensor& value) {
              nb::gil_scoped_acquire gil;
              (*shared)(name, numpy_tensor(value));
            };
            nb::gil_scoped_release release;
            self.set_tap(std::move(tap));
          },
          "callback"_a.none());

  nb::class_<rt::SimulatedClock>(m, "SimulatedClock")
      .def(nb::init<double>(), "start"_a = 0.0)
      .def("now", &rt::SimulatedClock::now)
      .def("set", &rt::SimulatedClock::set, "seconds"_a)
      .def("advance", &rt::SimulatedClock::advance, "seconds"_a);

  nb::class_<PyExecutor>(m, "ChunkExecutor")
      .def(
          "__init__",
          [](PyExecutor* self, nb::handle policy, const std::string& mode, double hz, int execute_steps, int threshold,
             const std::string& aggregate, double new_weight, double ensemble_m,
             std::shared_ptr<rt::SimulatedClock> clock, int metrics_window) {
            rt::ExecutorOptions o;
            o.mode = rt::parse_mode(mode);
            o.hz = hz;
            o.execute_steps = execute_steps;
            o.threshold = threshold;
            o.aggregate = rt::parse_aggregate(aggregate);
            o.new_weight = new_weight;
            o.ensemble_m = ensemble_m;
            o.clock = clock;
            o.metrics_window = metrics_window;
            rt::InferFn infer;
            if (nb::isinstance<Policy>(policy)) {
              infer = rt::policy_infer(nb::cast<const Policy&>(policy));
            } else if (PyCallable_Check(policy.ptr())) {
              infer = python_infer(policy);
            } else {
              throw nb::type_error(("policy: expected a focusvla.Policy or a callable, got " + py_type_name(policy)).c_str());
            }
            new (self) PyExecutor{std::make_unique<rt::ChunkExecutor>(std::move(infer), o)};
          },
          "policy"_a, "mode"_a = "async", "hz"_a = 20.0, "execute_steps"_a = 0, "threshold"_a = 4,
          "aggregate"_a = "replace", "new_weight"_a = 0.7, "ensemble_m"_a = 0.01, "clock"_a.none() = nb::none(),
          "metrics_window"_a = 100000)
      .def(
          "tick",
          [](PyExecutor& self, nb::handle images, nb::handle instruction, nb::handle proprio) {
            std::vector<InputArray> keep;
            Observation o;
            o.images = image_list(images, keep);
            o.instruction = instruction_string(instruction);
            o.proprio = proprio_vector(proprio);
            rt::ChunkExecutor& executor = self.get();
            Eigen::VectorXd action;
            {
              nb::gil_scoped_release release;
              action = executor.tick(o);
            }
            return numpy_vector(action);
          },
          "images"_a, "instruction"_a, "proprio"_a = nb::none())
      .def(
          "wait_for_inference",
          [](PyExecutor& self, double timeout) {
            rt::ChunkExecutor& executor = self.get();
            nb::gil_scoped_release release;
            return executor.wait_for_inference(timeout);
          },
          "timeout"_a)
      .def_prop_ro("inference_in_flight", [](PyExecutor& self) { return self.get().inference_in_flight(); })
      .def("metrics",
           [](PyExecutor& self) {
             rt::ChunkExecutor& executor = self.get();
             rt::ExecutorMetrics m;
             {
               nb::gil_scoped_release release;  // the executor's locks are taken by its own threads too
               m = executor.metrics();
             }
             return metrics_dict(m);
           })
      .def("last_tick",
           [](PyExecutor& self) {
             rt::ChunkExecutor& executor = self.get();
             rt::TickReport report;
             {
               nb::gil_scoped_release release;
               report = executor.last_tick();
             }
             return tick_dict(report);
           })
      .def_prop_ro("options", [](PyExecutor& self) { return options_dict(self.get().options()); })
      .def("close", &PyExecutor::close)
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](PyExecutor& self, nb::handle, nb::handle, nb::handle) { self.close(); }, "exc_type"_a.none(),
           "exc_value"_a.none(), "traceback"_a.none());
}
