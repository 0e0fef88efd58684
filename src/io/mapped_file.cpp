#include "focusvla/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "focusvla/core/error.h"

namespace focusvla::io {
namespace {

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + static_cast<int64_t>(st.st_mtim.tv_nsec);
}

}  // namespace

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(path + ": cannot stat (" + std::strerror(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  uint8_t* data = nullptr;
  if (size > 0) {
    void* mapped = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error(path + ": cannot mmap " + std::to_string(size) + " bytes (" + std::strerror(err) + ")");
    }
    data = static_cast<uint8_t*>(mapped);
  }
  return std::shared_ptr<MappedFile>(new MappedFile(path, fd, data, size, mtime_ns(st)));
}

MappedFile::MappedFile(std::string path, int fd, uint8_t* data, size_t size, int64_t mtime_ns)
    : path_(std::move(path)), fd_(fd), data_(data), size_(size), mtime_ns_(mtime_ns) {}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
}

std::string MappedFile::changed_on_disk() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return std::string("cannot stat it (") + std::strerror(errno) + ")";
  if (static_cast<size_t>(st.st_size) != size_)
    return "its size went from " + std::to_string(size_) + " to " + std::to_string(st.st_size) + " bytes";
  if (mtime_ns(st) != mtime_ns_) return "it was written to";
  return {};
}

void MappedFile::release(size_t offset, size_t length) const {
  if (data_ == nullptr || offset >= size_) return;
  if (length > size_ - offset) length = size_ - offset;
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data_) + offset;
  const uintptr_t first = (begin + page - 1) / page * page;
  const uintptr_t last = (begin + length) / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

}  // namespace focusvla::io
