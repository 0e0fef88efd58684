// Fuzz target: a whole torch.save file (zip archive: data.pkl, data/<key> storage records,
// version) through the public read_torch_state_dict, written to a memfd and opened by path. Most
// of the zip handling is LibTorch's (miniz, PyTorchStreamReader; not instrumented): this target
// checks that what it throws comes out as focusvla::Error and that the unpickler copes with
// the records it gets. fuzz_torch_pickle goes deeper into the pickle stream.

#include <cstddef>
#include <cstdint>
#include <string>

#include "focusvla/core/error.h"
#include "focusvla/io/torch_pickle.h"
#include "fuzz_util.h"
#include "torch_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static focusvla::fuzz::MemFile file("fuzz_checkpoint.pt");
  const std::string& path = file.write(data, size);
  try {
    focusvla::fuzz::check_state_dict(focusvla::io::read_torch_state_dict(path));
  } catch (const focusvla::Error& e) {
    focusvla::fuzz::rejected(e);
  }
  return 0;
}
