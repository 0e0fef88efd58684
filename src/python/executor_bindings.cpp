// focusvla._core's SimulatedClock and ChunkExecutor: runtime::ChunkExecutor over a Policy or a
// Python callable (the GIL taken only to call Python, released while waiting for the executor).

#include <nanobind/nanobind.h>
// nanobind casters: a missing one compiles and fails at run time (a TypeError), so every file of
// the module includes all that the module uses.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "conversions.h"
#include "focusvla/core/error.h"
#include "focusvla/runtime/chunk_executor.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace focusvla::python {
namespace {

using focusvla::ActionChunk;
using focusvla::Error;
using focusvla::Observation;
using focusvla::Policy;
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

// Every open executor, so that interpreter exit can close them first (close_all_executors).
struct PyExecutor;
std::mutex live_mutex;
std::set<PyExecutor*> live_executors;

// The Python object: closing (and destruction) releases the GIL, which a worker running a Python
// policy needs to finish.
struct PyExecutor {
  std::unique_ptr<rt::ChunkExecutor> executor;

  explicit PyExecutor(std::unique_ptr<rt::ChunkExecutor> e) : executor(std::move(e)) {
    std::lock_guard<std::mutex> lock(live_mutex);
    live_executors.insert(this);
  }
  ~PyExecutor() {
    close();
    std::lock_guard<std::mutex> lock(live_mutex);
    live_executors.erase(this);
  }
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

// Closes every open executor (atexit, registered below). An executor left open at interpreter exit
// may have its worker inside a Python policy: once finalization starts, that thread is ended when
// it next takes the GIL (pthread_exit, unwinding through the policy call) and the process aborts.
// atexit callbacks run before finalization, with the interpreter whole: each close() waits, GIL
// released, for the call in flight to return.
void close_all_executors() {
  std::vector<nb::object> open;  // references: none is destroyed while another one closes
  {
    std::lock_guard<std::mutex> lock(live_mutex);  // the GIL is held and not released under it
    for (PyExecutor* e : live_executors)
      if (nb::object o = nb::find(e); o.is_valid()) open.push_back(std::move(o));
  }
  for (const nb::object& o : open) nb::inst_ptr<PyExecutor>(o)->close();
}

void bind_executor(nb::module_& m) {
  m.def("_close_all_executors", &close_all_executors,
        "Closes every open ChunkExecutor (registered with atexit by the module).");
  nb::module_::import_("atexit").attr("register")(m.attr("_close_all_executors"));
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
            new (self) PyExecutor(std::make_unique<rt::ChunkExecutor>(std::move(infer), o));
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

}  // namespace focusvla::python
