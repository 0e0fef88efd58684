# Every dependency is found here, once. scripts/setup installs them on Debian/Ubuntu:
# LibTorch from the pip torch wheel in .venv (or any LibTorch: pass -DTorch_DIR=... or put it on
# CMAKE_PREFIX_PATH), the rest from the distribution.
include(GNUInstallDirs)
find_package(PkgConfig REQUIRED)

if(NOT Torch_DIR AND NOT DEFINED ENV{Torch_DIR})
  # Fall back to the project's virtual environment, as scripts/setup creates it.
  set(_focusvla_venv_python "${PROJECT_SOURCE_DIR}/.venv/bin/python")
  if(EXISTS "${_focusvla_venv_python}")
    execute_process(
      COMMAND "${_focusvla_venv_python}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _focusvla_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
      RESULT_VARIABLE _focusvla_torch_rc ERROR_QUIET)
    if(_focusvla_torch_rc EQUAL 0)
      list(APPEND CMAKE_PREFIX_PATH "${_focusvla_torch_prefix}")
    endif()
  endif()
endif()
find_package(Torch REQUIRED)
message(STATUS "focusvla: LibTorch ${Torch_VERSION} from ${Torch_DIR}")

find_package(nlohmann_json 3.10 REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
# LibTorch ships headers of its own fmt (a newer major version) on its include path, which would
# shadow the fmt that the system spdlog is built against. Our translation units that use spdlog
# see a directory holding only the system fmt first (FOCUSVLA_FMT_SHIM, a private include).
get_target_property(_focusvla_fmt_includes fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
list(GET _focusvla_fmt_includes 0 _focusvla_fmt_include)
set(FOCUSVLA_FMT_SHIM "${PROJECT_BINARY_DIR}/fmt-shim")
file(MAKE_DIRECTORY "${FOCUSVLA_FMT_SHIM}")
if(NOT EXISTS "${FOCUSVLA_FMT_SHIM}/fmt")
  file(CREATE_LINK "${_focusvla_fmt_include}/fmt" "${FOCUSVLA_FMT_SHIM}/fmt" SYMBOLIC)
endif()
find_package(Eigen3 3.3 REQUIRED NO_MODULE)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
# libjpeg (libjpeg-turbo, as TensorFlow bundles it; Debian: libjpeg62-turbo-dev) for the LIBERO
# resize's JPEG round trip (vision/jpeg.h).
find_package(JPEG REQUIRED)
message(STATUS "focusvla: libjpeg ${JPEG_VERSION} from ${JPEG_LIBRARIES}")

# OpenCV is optional: it adds cv::Mat inputs. Machines without its CMake package (the GPU
# machines get bare core/imgproc libraries) build without it.
find_package(OpenCV QUIET COMPONENTS core imgproc)
if(OpenCV_FOUND)
  set(FOCUSVLA_HAVE_OPENCV ON)
  set(FOCUSVLA_OPENCV_TARGETS opencv_core opencv_imgproc)
else()
  set(FOCUSVLA_HAVE_OPENCV OFF)
  message(STATUS "focusvla: OpenCV not found, building without cv::Mat support")
endif()
# The command-line tool decodes PNG / JPEG files with OpenCV's imgcodecs when it is there.
find_package(OpenCV QUIET COMPONENTS imgcodecs)
set(FOCUSVLA_HAVE_IMGCODECS ${OpenCV_FOUND})

# Imported targets are scoped to the directory that found them. When a project pulls focusvla in
# with add_subdirectory, its own targets link focusvla::focusvla and so need torch, torch_cpu,
# torch_cuda, PkgConfig::PCRE2, ... to be visible from its directories too.
get_directory_property(_focusvla_imported IMPORTED_TARGETS)
foreach(_target IN LISTS _focusvla_imported)
  get_target_property(_global ${_target} IMPORTED_GLOBAL)
  if(NOT _global)
    set_target_properties(${_target} PROPERTIES IMPORTED_GLOBAL TRUE)
  endif()
endforeach()
