// focusvla._core (nanobind): the Python binding of focusvla::Policy (this file), of
// runtime::ChunkExecutor (executor_bindings.cpp) and of the request decoder (codec_bindings.cpp);
// conversions.h the conversions they share. The Python package
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
#include "focusvla/policy/isolated_batch.h"
#include "focusvla/policy/policy.h"
#include "focusvla/runtime/chunk_executor.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using focusvla::ActionChunk;
using focusvla::Error;
using focusvla::Observation;
using focusvla::Policy;
using namespace focusvla::python;  // conversions.h


// One observation from Python arguments (explain, compare_quantize); `keep` holds the arrays the
// image tensors view.
Observation observation_of(nb::handle images, nb::handle instruction, nb::handle proprio, std::vector<InputArray>& keep) {
  Observation obs;
  obs.images = image_list(images, keep);
  obs.instruction = instruction_string(instruction);
  obs.proprio = proprio_vector(proprio);
  return obs;
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

// Policy.settings: settings_json (the CLI's and the server's form) with the chunk shape.
nb::object settings_dict(const focusvla::PolicySettings& s) {
  nlohmann::json j = focusvla::settings_json(s);
  j["chunk"] = s.chunk;
  j["action_dim"] = s.action_dim;
  return py_json(j);
}

nb::dict timing_dict(const focusvla::StageTiming& t) {
  nb::dict d;
  for (const auto& [name, value] : focusvla::timing_fields(t)) d[name.c_str()] = value;
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
std::string option_text(nb::handle value, const std::string& what) {
  if (value.is_none()) return "";
  return utf8_text(nb::isinstance<nb::str>(value) ? nb::borrow<nb::str>(value) : nb::str(value), what);
}

Observation observation(nb::handle item, size_t index, std::vector<InputArray>& keep) {
  nb::object images, instruction, proprio = nb::none();
  if (nb::isinstance<nb::dict>(item)) {
    nb::dict d = nb::borrow<nb::dict>(item);
    for (auto [key, value] : d) {
      const bool known = nb::isinstance<nb::str>(key) &&
                         (nb::str("images").equal(key) || nb::str("instruction").equal(key) || nb::str("proprio").equal(key));
      if (!known) {
        // repr() is ASCII-safe for any key (a lone surrogate shows as '\udcff').
        throw nb::type_error(("observations[" + std::to_string(index) + "]: unknown key " +
                              utf8_text(nb::repr(key), "key") + " (expected images, instruction, proprio)").c_str());
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

// act_batch(isolate_errors=True): one bad observation fails only itself (run_isolated). Its entry
// is the exception, returned, not raised: TypeError for an item that is not an observation,
// focusvla.Error for one the policy refused.
nb::list act_batch_isolated(const Policy& self, nb::handle observations, bool return_info) {
  std::vector<nb::object> out(nb::len(observations));
  std::vector<InputArray> keep;
  std::vector<Observation> batch;
  std::vector<size_t> where;  // batch[k] is observations[where[k]]
  const nb::object error_type = nb::module_::import_("focusvla._core").attr("Error");
  size_t i = 0;
  for (nb::handle item : observations) {
    try {
      batch.push_back(observation(item, i, keep));
      where.push_back(i);
    } catch (const nb::builtin_exception& e) {
      out[i] = nb::handle(PyExc_TypeError)(e.what());
    } catch (const nb::python_error& e) {  // raised by the item's own Python code: that exception
      out[i] = nb::borrow(e.value());
    }
    ++i;
  }
  std::vector<focusvla::ActOutcome> outcomes;
  {
    nb::gil_scoped_release release;
    outcomes = focusvla::run_isolated(batch, [&self](const std::vector<Observation>& b) { return self.act_batch(b); });
  }
  for (size_t k = 0; k < where.size(); ++k) {
    focusvla::ActOutcome& o = outcomes[k];
    out[where[k]] = o.chunk ? result(self, std::move(*o.chunk), return_info) : error_type(o.error);
  }
  nb::list list;
  for (auto& entry : out) list.append(entry);
  return list;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "focusvla: LibTorch inference for FocusVLA / VLA-Adapter robot policies (native module)";
  m.attr("__version__") = FOCUSVLA_VERSION;
  m.attr("__torch_version__") = FOCUSVLA_TORCH_VERSION;

  nb::exception<Error>(m, "Error", PyExc_RuntimeError);
  bind_codec(m);
  bind_executor(m);

  m.def("canonical_option", &focusvla::canonical_option, "option"_a, "text"_a, "what"_a,
        "The canonical spelling of a policy option's text (docs/OPTIONS.md), checked for spelling only; "
        "focusvla.Error naming `what` otherwise. The CLI, the C ABI and Policy.load accept the same spellings.");
  nb::class_<Policy>(m, "Policy")
      .def_static(
          "load",
          [](const std::string& path, nb::handle device, nb::handle dtype, std::optional<std::string> unnorm_key,
             const std::string& prompt_format, bool center_crop, int threads, bool cuda_graphs, int64_t num_images,
             const std::string& normalization, bool diagnostics, const std::string& cpu_bf16_matmul,
             const std::string& quantize, bool jpeg_roundtrip, std::optional<std::vector<int64_t>> batch_buckets,
             int max_cached_shapes) {
            focusvla::PolicyOptions o;
            o.device = focusvla::parse_device(option_text(device, "device"), "device");
            o.dtype = focusvla::parse_dtype(option_text(dtype, "dtype"), "dtype");
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
            o.batch_buckets = batch_buckets.value_or(std::vector<int64_t>{});
            o.max_cached_shapes = max_cached_shapes;
            nb::gil_scoped_release release;
            return Policy::load(path, o);
          },
          "path"_a, "device"_a = "cpu", "dtype"_a = nb::none(), "unnorm_key"_a = nb::none(),
          "prompt_format"_a = "auto", "center_crop"_a = true, "threads"_a = 0, "cuda_graphs"_a = true,
          "num_images"_a = 0, "normalization"_a = "bounds_q99", "diagnostics"_a = false,
          "cpu_bf16_matmul"_a = "auto", "quantize"_a = "none", "jpeg_roundtrip"_a = true,
          "batch_buckets"_a = nb::none(), "max_cached_shapes"_a = 8)
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
          [](const Policy& self, nb::handle observations, bool return_info, bool isolate_errors) {
            if (!nb::isinstance<nb::list>(observations) && !nb::isinstance<nb::tuple>(observations)) {
              throw nb::type_error(("observations: expected a list of dicts or tuples, got " +
                                    py_type_name(observations)).c_str());
            }
            if (isolate_errors) return act_batch_isolated(self, observations, return_info);
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
          "observations"_a, "return_info"_a = false, "isolate_errors"_a = false)
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
      .def(
          "warm_up",
          [](const Policy& self, const std::string& instruction, int64_t cameras) {
            nb::gil_scoped_release release;  // whole forwards
            return self.warm_up(instruction, cameras);
          },
          "instruction"_a, "cameras"_a = 0)
      .def_prop_ro("cached_shapes", &Policy::cached_shapes)
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

}
