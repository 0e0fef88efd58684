// The `version` record of a torch.save archive: a walk of the zip central directory (see
// torch_pickle_archive.h).

#include "torch_pickle_archive.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

#include "focusvla/core/error.h"
#include "focusvla/io/mapped_file.h"

namespace focusvla::io {
namespace {

constexpr uint32_t kEndOfDirectory = 0x06054b50, kEndOfDirectory64 = 0x06064b50, kLocator64 = 0x07064b50,
                   kDirectoryEntry = 0x02014b50, kLocalHeader = 0x04034b50;

class ZipView {
 public:
  explicit ZipView(const MappedFile& file) : data_(file.data()), size_(file.size()) {}
  uint64_t size() const { return size_; }
  bool has(uint64_t offset, uint64_t n) const { return offset <= size_ && n <= size_ - offset; }
  // Little-endian integer of n bytes at offset; the caller checked has(offset, n).
  uint64_t le(uint64_t offset, int n) const {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | data_[offset + static_cast<uint64_t>(i)];
    return v;
  }
  std::string text(uint64_t offset, uint64_t n) const { return {reinterpret_cast<const char*>(data_ + offset), n}; }

 private:
  const uint8_t* data_;
  uint64_t size_;
};

struct ZipDirectory {
  uint64_t entries = 0, offset = 0;
};

struct ZipEntry {
  std::string name;
  uint64_t method = 0, compressed = 0, size = 0, local_offset = 0;
};

// The central directory from the end-of-directory record (zip64 aware); nullopt when not found.
std::optional<ZipDirectory> find_directory(const ZipView& zip) {
  if (zip.size() < 22) return std::nullopt;
  const uint64_t lowest = zip.size() - 22 > 65535 ? zip.size() - 22 - 65535 : 0;  // a comment is < 64 KiB
  for (uint64_t pos = zip.size() - 22 + 1; pos-- > lowest;) {
    if (zip.le(pos, 4) != kEndOfDirectory) continue;
    const ZipDirectory plain{zip.le(pos + 10, 2), zip.le(pos + 16, 4)};
    if (plain.entries != 0xFFFF && plain.offset != 0xFFFFFFFF) return plain;
    if (pos < 20 || zip.le(pos - 20, 4) != kLocator64) return std::nullopt;
    const uint64_t end64 = zip.le(pos - 20 + 8, 8);
    if (!zip.has(end64, 56) || zip.le(end64, 4) != kEndOfDirectory64) return std::nullopt;
    return ZipDirectory{zip.le(end64 + 32, 8), zip.le(end64 + 48, 8)};
  }
  return std::nullopt;
}

// The central-directory entry at `pos`, which moves past it; nullopt when malformed.
std::optional<ZipEntry> read_entry(const ZipView& zip, uint64_t& pos) {
  if (!zip.has(pos, 46) || zip.le(pos, 4) != kDirectoryEntry) return std::nullopt;
  const uint64_t name_len = zip.le(pos + 28, 2), extra_len = zip.le(pos + 30, 2), comment_len = zip.le(pos + 32, 2);
  if (!zip.has(pos + 46, name_len + extra_len + comment_len)) return std::nullopt;
  ZipEntry e{zip.text(pos + 46, name_len), zip.le(pos + 10, 2), zip.le(pos + 20, 4), zip.le(pos + 24, 4),
             zip.le(pos + 42, 4)};
  // The zip64 extra field (id 1) holds, in this order, the 64-bit values of the fields read as 0xFFFFFFFF.
  for (uint64_t x = pos + 46 + name_len, end = x + extra_len; x + 4 <= end;) {
    const uint64_t id = zip.le(x, 2), len = zip.le(x + 2, 2);
    if (x + 4 + len > end) return std::nullopt;
    uint64_t field = x + 4;
    if (id == 1) {
      for (uint64_t* value : {&e.size, &e.compressed, &e.local_offset}) {
        if (*value != 0xFFFFFFFF) continue;
        if (field + 8 > x + 4 + len) return std::nullopt;
        *value = zip.le(field, 8);
        field += 8;
      }
    }
    x += 4 + len;
  }
  pos += 46 + name_len + extra_len + comment_len;
  return e;
}

bool same_name(const std::string& a, const std::string& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

std::optional<std::string> torch_archive_version_record(const std::string& path) {
  const auto file = MappedFile::open(path);
  const ZipView zip(*file);
  const auto directory = find_directory(zip);
  if (!directory) return std::nullopt;
  check(directory->entries > 0, path, "not a torch.save archive: the zip holds no files");
  std::optional<ZipEntry> version, data_version;
  std::string folder;
  uint64_t pos = directory->offset;
  for (uint64_t i = 0; i < directory->entries; ++i) {  // each entry takes >= 46 bytes: bounded by the file
    auto entry = read_entry(zip, pos);
    if (!entry) return std::nullopt;
    if (i == 0) {
      const size_t slash = entry->name.find('/');
      check(slash != std::string::npos, path,
            "not a torch.save archive: its first record '" + entry->name + "' is not in a folder");
      folder = entry->name.substr(0, slash + 1);
    }
    if (!data_version && same_name(entry->name, folder + ".data/version")) data_version = entry;
    if (!version && same_name(entry->name, folder + "version")) version = entry;
  }
  const auto& record = data_version ? data_version : version;
  check(record.has_value(), path, "not a torch.save archive: it has no version record");
  if (record->method != 0 || record->compressed != record->size) return std::nullopt;  // deflated
  const uint64_t local = record->local_offset;
  if (!zip.has(local, 30) || zip.le(local, 4) != kLocalHeader) return std::nullopt;
  const uint64_t data = local + 30 + zip.le(local + 26, 2) + zip.le(local + 28, 2);
  if (!zip.has(data, record->size)) return std::nullopt;
  return zip.text(data, record->size);
}

std::map<std::string, ArchiveSpan> torch_archive_stored_records(const MappedFile& file) {
  const ZipView zip(file);
  std::map<std::string, ArchiveSpan> records;
  std::map<std::string, int> seen;
  const auto directory = find_directory(zip);
  if (!directory) return records;
  uint64_t pos = directory->offset;
  std::string folder;  // the first entry's, as LibTorch's reader takes it
  for (uint64_t i = 0; i < directory->entries; ++i) {  // each entry takes >= 46 bytes: bounded by the file
    const auto entry = read_entry(zip, pos);
    if (!entry) return {};
    if (i == 0) {
      const size_t slash = entry->name.find('/');
      if (slash == std::string::npos) return {};
      folder = entry->name.substr(0, slash + 1);
    }
    if (entry->name.compare(0, folder.size(), folder) != 0) continue;
    const std::string name = entry->name.substr(folder.size());
    if (++seen[name] > 1) {
      records.erase(name);
      continue;
    }
    if (entry->method != 0 || entry->compressed != entry->size) continue;
    const uint64_t local = entry->local_offset;
    if (!zip.has(local, 30) || zip.le(local, 4) != kLocalHeader) continue;
    const uint64_t data = local + 30 + zip.le(local + 26, 2) + zip.le(local + 28, 2);
    if (!zip.has(data, entry->size)) continue;
    records[name] = ArchiveSpan{data, entry->size};
  }
  return records;
}

}  // namespace focusvla::io
