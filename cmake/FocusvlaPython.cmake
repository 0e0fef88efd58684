# The Python extension focusvla._core (nanobind; FOCUSVLA_BUILD_PYTHON, driven by pyproject.toml).
# It links the static library (compiled position-independent) and the LibTorch of the torch
# wheel the build ran against; at run time focusvla/__init__.py imports torch first, so the
# process holds one LibTorch (torch's own shared libraries, found through the rpath as well).
execute_process(
  COMMAND "${Python_EXECUTABLE}" -m nanobind --cmake_dir
  OUTPUT_VARIABLE _focusvla_nanobind_dir OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _focusvla_nanobind_rc)
if(NOT _focusvla_nanobind_rc EQUAL 0)
  message(FATAL_ERROR "focusvla: ${Python_EXECUTABLE} has no nanobind (pip install nanobind)")
endif()
list(APPEND CMAKE_PREFIX_PATH "${_focusvla_nanobind_dir}")
find_package(nanobind CONFIG REQUIRED)

message(STATUS "focusvla: Python module against torch ${FOCUSVLA_TORCH_VERSION} (LibTorch ${Torch_VERSION})")

# openpi's request decoder (src/serve/msgpack_numpy.cpp, the server's own, fuzzed) is compiled in:
# the Ray app decodes requests with it (focusvla._core.decode_request).
include(${CMAKE_CURRENT_LIST_DIR}/FocusvlaMsgpack.cmake)
if(NOT FOCUSVLA_MSGPACK_FOUND)
  message(FATAL_ERROR "focusvla: the Python module needs Boost (>= 1.70) headers and msgpack-cxx for its request "
                      "decoder (Debian: libboost-dev libmsgpack-cxx-dev; scripts/setup installs them)")
endif()
nanobind_add_module(_core NB_STATIC ${PROJECT_SOURCE_DIR}/src/python/bindings.cpp
                    ${PROJECT_SOURCE_DIR}/src/python/codec_bindings.cpp
                    ${PROJECT_SOURCE_DIR}/src/python/conversions.cpp ${PROJECT_SOURCE_DIR}/src/python/executor_bindings.cpp ${PROJECT_SOURCE_DIR}/src/serve/msgpack_numpy.cpp)
target_link_libraries(_core PRIVATE focusvla::focusvla Boost::headers ${FOCUSVLA_MSGPACK_TARGET})
target_compile_definitions(_core PRIVATE FOCUSVLA_TORCH_VERSION="${FOCUSVLA_TORCH_VERSION}"
                                         FOCUSVLA_VERSION="${PROJECT_VERSION}")
# torch/lib of the same environment: focusvla/_core.so sits in site-packages/focusvla/.
set_target_properties(_core PROPERTIES INSTALL_RPATH "$ORIGIN/../torch/lib" BUILD_WITH_INSTALL_RPATH ON)
install(TARGETS _core LIBRARY DESTINATION focusvla)
# The torch version built against, readable before the module loads (focusvla/__init__.py checks
# it against the torch it imports, so a mismatch is a clear ImportError, not a missing symbol).
file(WRITE "${PROJECT_BINARY_DIR}/focusvla_build_info.py"
  "# Written by the build (cmake/FocusvlaPython.cmake).\nTORCH_VERSION = \"${FOCUSVLA_TORCH_VERSION}\"\n")
install(FILES "${PROJECT_BINARY_DIR}/focusvla_build_info.py" DESTINATION focusvla RENAME _build_info.py)
