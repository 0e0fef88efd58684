#pragma once
// A read-only view of a whole file through mmap. Pages are mapped private and writable
// (copy-on-write), so a caller that writes into a zero-copy tensor changes its own copy and never
// faults, and the file on disk is never modified.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace focusvla::io {

class MappedFile {
 public:
  // Maps `path`; throws Error naming the path when it cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Drops the resident pages that lie wholly inside [offset, offset + length): the next read
  // faults them back in from the file. Used after a tensor has been copied out, so a load peaks
  // at about one copy of the file. Private modifications in that range are discarded.
  void release(size_t offset, size_t length) const;

 private:
  MappedFile(std::string path, uint8_t* data, size_t size);
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace focusvla::io
