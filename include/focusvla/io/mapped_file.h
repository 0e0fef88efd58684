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

  // Empty while the mapped file is as it was when mapped; otherwise what changed ("its size went
  // from A to B bytes", "it was written to"). A file rewritten in place (truncated: what
  // `torch.save` or `safetensors.save_file` to the same path do) takes the mapping's pages away:
  // reading one that is not resident then kills the process with SIGBUS. A caller that keeps
  // reading a mapping after the load (the token embeddings, llm/qwen2.h) asks this first and
  // throws a named error instead. A file replaced by a rename or deleted is not a change: the
  // mapping keeps the old file. One fstat (~1 us).
  std::string changed_on_disk() const;

 private:
  MappedFile(std::string path, int fd, uint8_t* data, size_t size, int64_t mtime_ns);
  std::string path_;
  int fd_ = -1;  // kept open for changed_on_disk()
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int64_t mtime_ns_ = 0;
};

}  // namespace focusvla::io
