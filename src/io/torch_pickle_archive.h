#pragma once
// The `version` record of a torch.save archive, read without LibTorch (private to src/io/; used by
// torch_pickle.cpp). Torch-free, so it is also built with the parsers (ASan tests, fuzz targets).
//
// The record is checked before LibTorch's reader opens the file: that reader parses it with
// std::stoull (a 23-digit number escaped as std::out_of_range) and leaks its zip state whenever
// its constructor throws. A minimal, bounds-checked walk of the zip central directory finds the
// record as LibTorch does (in the first entry's folder, `.data/version`, else `version`, names
// compared case-insensitively as miniz does). A layout this walk does not follow (a compressed
// record, a directory it cannot read) is left to LibTorch.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace focusvla::io {

// The text of the version record LibTorch would read from the archive at `path`; nullopt when the
// walk cannot tell. Throws Error for what LibTorch's reader would throw on after opening the zip
// (no entries, no folder, no version record), and when the file cannot be opened or mapped.
std::optional<std::string> torch_archive_version_record(const std::string& path);

class MappedFile;

// Where a record stored without compression (as torch.save writes every record) lies in the file.
struct ArchiveSpan {
  uint64_t offset = 0;  // of the record's first byte, past its local header
  uint64_t size = 0;
};

// Every record of the archive stored uncompressed, by its name inside the archive's folder (the
// first entry's, as LibTorch's reader takes it: "data/0" for "archive/data/0"), with its
// bytes inside the file (bounds-checked); deflated, malformed or out-of-bounds entries are left
// out (LibTorch's reader copies those), and so is a name that occurs twice. Empty when the
// directory cannot be read. read_torch_state_dict maps the storages found here instead of copying
// them, after checking that LibTorch's reader locates each at the same offset.
std::map<std::string, ArchiveSpan> torch_archive_stored_records(const MappedFile& file);

}  // namespace focusvla::io
