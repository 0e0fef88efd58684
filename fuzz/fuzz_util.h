#pragma once
// Shared by the fuzz targets (fuzz/fuzz_*.cpp). Each target feeds the bytes libFuzzer gives it to
// a public focusvla entry point, catches focusvla::Error (the documented answer to bad input) and
// lets anything else escape: an uncaught exception, a sanitizer report or a failed invariant
// (fail() below) is a finding that libFuzzer saves as a crash artifact.

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

namespace focusvla::fuzz {

// An invariant that the library promises does not hold for this input.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "focusvla fuzz: invariant violated: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// A rejected input: say why when FOCUSVLA_FUZZ_VERBOSE is set (for running a target on single
// files, e.g. to check that the seeds are accepted); silent otherwise.
inline void rejected(const std::exception& e) {
  static const bool verbose = std::getenv("FOCUSVLA_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "focusvla fuzz: rejected: %s\n", e.what());
}

// An in-memory file that the path-taking readers can open: a memfd, reached through
// /proc/self/fd/N, rewritten for every input. No disk traffic, nothing left behind.
class MemFile {
 public:
  explicit MemFile(const char* name) {
    fd_ = ::memfd_create(name, MFD_CLOEXEC);
    if (fd_ < 0) {
      std::fprintf(stderr, "focusvla fuzz: memfd_create failed: %s\n", std::strerror(errno));
      std::abort();
    }
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  ~MemFile() { ::close(fd_); }

  // Replaces the content with `size` bytes and returns the path to open.
  const std::string& write(const void* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    const auto* p = static_cast<const char*>(data);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd_, p + done, size - done, static_cast<off_t>(done));
      if (n <= 0) {
        std::fprintf(stderr, "focusvla fuzz: memfd write failed: %s\n", std::strerror(errno));
        std::abort();
      }
      done += static_cast<size_t>(n);
    }
    return path_;
  }
  const std::string& write(std::string_view bytes) { return write(bytes.data(), bytes.size()); }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace focusvla::fuzz
