# Source lists. The Torch-free part (parsers, tokenizer, logging, the walk that finds a torch.save
# archive's version record) is listed apart so that it can also be built with AddressSanitizer
# (and the fuzz targets) without instrumenting LibTorch.
file(GLOB_RECURSE FOCUSVLA_SOURCES CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/*.cpp")
list(FILTER FOCUSVLA_SOURCES EXCLUDE REGEX "/src/cli/")
list(FILTER FOCUSVLA_SOURCES EXCLUDE REGEX "/src/python/")  # the Python module (FOCUSVLA_BUILD_PYTHON)
list(FILTER FOCUSVLA_SOURCES EXCLUDE REGEX "/src/serve/")   # the server library (FocusvlaServe.cmake)

set(FOCUSVLA_TORCH_FREE_SOURCES
  ${PROJECT_SOURCE_DIR}/src/core/log.cpp
  ${PROJECT_SOURCE_DIR}/src/io/safetensors.cpp
  ${PROJECT_SOURCE_DIR}/src/io/mapped_file.cpp
  ${PROJECT_SOURCE_DIR}/src/io/json_file.cpp
  ${PROJECT_SOURCE_DIR}/src/io/checkpoint_config.cpp
  ${PROJECT_SOURCE_DIR}/src/io/torch_pickle_archive.cpp)
file(GLOB _focusvla_text_sources CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/src/text/*.cpp")
list(APPEND FOCUSVLA_TORCH_FREE_SOURCES ${_focusvla_text_sources})
