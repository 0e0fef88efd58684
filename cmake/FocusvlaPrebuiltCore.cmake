# A wheel that links the library of an existing build of this same source tree instead of
# compiling it a second time: FOCUSVLA_BUILD_PYTHON with FOCUSVLA_PYTHON_CORE_BUILD=<build dir>
# (pip wheel . -C cmake.define.FOCUSVLA_PYTHON_CORE_BUILD=build). The test suite's wheels
# (python_package, ray_serve) are built this way: the library is the one every other test ran,
# and the suite saves the ~15 CPU-minutes of compiling it again. A plain `pip install .` compiles
# the library itself (CMakeLists.txt). That build's library is position-independent; it must have
# been built against the LibTorch this module is built against, which is checked here.
set(_core "${FOCUSVLA_PYTHON_CORE_BUILD}")
if(NOT EXISTS "${_core}/focusvla-core-targets.cmake" OR NOT EXISTS "${_core}/libfocusvla.a")
  message(FATAL_ERROR "focusvla: FOCUSVLA_PYTHON_CORE_BUILD=${_core} is not a built focusvla build directory "
                      "(no focusvla-core-targets.cmake or libfocusvla.a there): build it first")
endif()
load_cache("${_core}" READ_WITH_PREFIX _core_ Torch_DIR CMAKE_HOME_DIRECTORY)
get_filename_component(_core_torch "${_core_Torch_DIR}" REALPATH)
get_filename_component(_our_torch "${Torch_DIR}" REALPATH)
if(NOT _core_torch STREQUAL _our_torch)
  message(FATAL_ERROR "focusvla: ${_core} was built against the LibTorch of ${_core_Torch_DIR}, this module against "
                      "${Torch_DIR}: one process must hold one LibTorch")
endif()
get_filename_component(_core_source "${_core_CMAKE_HOME_DIRECTORY}" REALPATH)
get_filename_component(_our_source "${PROJECT_SOURCE_DIR}" REALPATH)
if(NOT _core_source STREQUAL _our_source)
  message(FATAL_ERROR "focusvla: ${_core} is a build of ${_core_CMAKE_HOME_DIRECTORY}, not of ${PROJECT_SOURCE_DIR}")
endif()
include("${_core}/focusvla-core-targets.cmake")
set_target_properties(focusvla_core::focusvla PROPERTIES IMPORTED_GLOBAL TRUE)
add_library(focusvla::focusvla ALIAS focusvla_core::focusvla)
message(STATUS "focusvla: the Python module links the library of ${_core}")
