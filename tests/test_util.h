#pragma once
// Shared helpers for the C++ tests: where the oracle data and assets are. A missing directory is
// a failure with a message, never a skip.

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <filesystem>
#include <string>
#include <vector>
#include <ftw.h>
#include <unistd.h>

#include "focusvla/core/error.h"

namespace focusvla::testing {

// Runs f and expects focusvla::Error whose message contains every fragment.
inline void expect_error(const std::function<void()>& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected focusvla::Error, got no exception";
  } catch (const Error& e) {
    for (const auto& fragment : fragments)
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
          << "message: " << e.what() << "\nmissing: " << fragment;
  }
}


inline std::string env_dir(const char* variable) {
  const char* value = std::getenv(variable);
  if (value == nullptr || *value == '\0') {
    ADD_FAILURE() << variable << " is not set: run the tests through ctest (scripts/test)";
    return "/nonexistent";
  }
  return value;
}

// $FOCUSVLA_TEST_DATA/<group>/<name>; fails the test when the file is missing.
inline std::string data_path(const std::string& group, const std::string& name) {
  const std::string path = env_dir("FOCUSVLA_TEST_DATA") + "/" + group + "/" + name;
  if (!std::filesystem::exists(path))
    ADD_FAILURE() << "missing test data " << path << " (written by tests/python/gen_" << group << ".py)";
  return path;
}

// $FOCUSVLA_ASSETS/<name>; fails the test when missing.
inline std::string asset_path(const std::string& name) {
  const std::string path = env_dir("FOCUSVLA_ASSETS") + "/" + name;
  if (!std::filesystem::exists(path)) ADD_FAILURE() << "missing asset " << path;
  return path;
}

// Deletes a directory tree (errors ignored). Not std::filesystem::remove_all: the pip LibTorch
// exports its own copies of libstdc++'s filesystem functions, and its remove_all(path,
// error_code&) crashes (calls a null pointer) once it wins symbol resolution in our binaries.
inline void remove_tree(const std::string& path) {
  ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        ::remove(p);
        return 0;
      },
      16,
      FTW_DEPTH | FTW_PHYS);
}

// The scratch directories this process made; deleted when the test binary exits, so runs leave
// nothing behind in the temporary directory.
class ScratchDirs {
 public:
  static ScratchDirs& instance() {
    static ScratchDirs dirs;
    return dirs;
  }
  void add(const std::string& dir) { dirs_.push_back(dir); }
  ~ScratchDirs() {
    for (const auto& dir : dirs_) remove_tree(dir);
  }

 private:
  std::vector<std::string> dirs_;
};

// A fresh scratch directory for one test.
inline std::string scratch_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("focusvla_test_" + name + "_" + std::to_string(::getpid()));
  remove_tree(dir.string());
  std::filesystem::create_directories(dir);
  ScratchDirs::instance().add(dir.string());
  return dir.string();
}

}  // namespace focusvla::testing
