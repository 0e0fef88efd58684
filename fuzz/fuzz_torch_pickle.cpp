// Fuzz target: the restricted unpickler of read_torch_state_dict (src/io/torch_pickle.cpp), fed
// the data.pkl stream itself. The input is packed, as torch.save does, into a zip archive with
// LibTorch's own PyTorchStreamWriter, next to storage records data/0 .. data/15 of 4 KiB each
// (the seeds, data.pkl of small torch.save'd state dicts, refer to those), written to a memfd
// and read back through the public function. What reads must give views inside their storages.
//
// LibTorch itself is not instrumented (it is the prebuilt library the project links); the
// unpickler and this file are, with libFuzzer coverage, ASan and UBSan.

#include <caffe2/serialize/inline_container.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/io/torch_pickle.h"
#include "fuzz_util.h"
#include "torch_checks.h"

namespace {

constexpr int kStorages = 16;
constexpr size_t kStorageBytes = 4096;

std::string pack(const uint8_t* pickle, size_t size) {
  static const std::vector<uint8_t> storage = [] {
    std::vector<uint8_t> bytes(kStorageBytes);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 37 + 11);
    return bytes;
  }();
  std::string archive;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* buf, size_t n) {
    archive.append(static_cast<const char*>(buf), n);
    return n;
  });
  writer.writeRecord("data.pkl", pickle, size);
  writer.writeRecord("byteorder", "little", 6);
  for (int i = 0; i < kStorages; ++i)
    writer.writeRecord("data/" + std::to_string(i), storage.data(), storage.size());
  writer.writeEndOfFile();
  return archive;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static focusvla::fuzz::MemFile file("fuzz_checkpoint.pt");
  const std::string& path = file.write(pack(data, size));
  try {
    focusvla::fuzz::check_state_dict(focusvla::io::read_torch_state_dict(path));
  } catch (const focusvla::Error& e) {
    focusvla::fuzz::rejected(e);
  }
  return 0;
}
