// Fuzz target: a whole safetensors file through the public reader, SafetensorsFile::open (mmap,
// 8-byte header length, header, data). The bytes are written to a memfd and opened by path, as a
// checkpoint file is. Whatever opens must hand out tensors inside the mapping (the first and
// last byte of each is read), sorted, disjoint, and findable by name. Input: the file.

#include <cstddef>
#include <cstdint>
#include <string>

#include "focusvla/core/error.h"
#include "focusvla/io/safetensors.h"
#include "safetensors_checks.h"

using focusvla::fuzz::fail;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static focusvla::fuzz::MemFile file("fuzz.safetensors");
  const std::string& path = file.write(data, size);
  try {
    const auto st = focusvla::io::SafetensorsFile::open(path);
    const uint64_t mapped = st.mapping()->size();
    if (mapped != size) fail("the mapping is not the whole file");
    if (st.data_offset() < 8 || st.data_offset() > mapped) fail("data offset outside the file");
    focusvla::fuzz::check_tensors(st.tensors(), mapped - st.data_offset());
    volatile uint8_t sink = 0;
    for (const auto& t : st.tensors()) {
      if (st.find(t.name) != &t) fail("find('" + t.name + "') does not return the tensor");
      if (t.nbytes() > 0) sink = sink + st.data(t)[0] + st.data(t)[t.nbytes() - 1];
    }
    (void)sink;
  } catch (const focusvla::Error& e) {
    focusvla::fuzz::rejected(e);
  }
  return 0;
}
