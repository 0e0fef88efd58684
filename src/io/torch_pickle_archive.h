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

#include <optional>
#include <string>

namespace focusvla::io {

// The text of the version record LibTorch would read from the archive at `path`; nullopt when the
// walk cannot tell. Throws Error for what LibTorch's reader would throw on after opening the zip
// (no entries, no folder, no version record), and when the file cannot be opened or mapped.
std::optional<std::string> torch_archive_version_record(const std::string& path);

}  // namespace focusvla::io
