#pragma once
// safetensors reader: the file is memory-mapped, the header parsed and validated in full before
// any tensor is handed out, and tensors are views into the mapping. This part does not depend on
// LibTorch (see io/state_dict.h for the torch::Tensor view), so it is also fuzzed and run under
// AddressSanitizer.
//
// Format (https://github.com/huggingface/safetensors): u64 little-endian header length N, N bytes
// of JSON {name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {str: str}}, then the
// data; offsets are relative to the start of the data.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "focusvla/io/mapped_file.h"

namespace focusvla::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2 };

// "F32", "BF16", ... as the format spells them; throws Error for an unknown name.
DType parse_dtype(const std::string& name);
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section, [begin, end)
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  // The product of the shape, 0 when any entry is 0; throws Error naming the tensor when it
  // overflows int64 (never for a shape SafetensorsFile accepted with data).
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws Error naming the file and the problem for: a file shorter
  // than 8 bytes, a header length past the end of the file, a header that is not a JSON object,
  // an unknown dtype, a malformed shape (entries must fit int64) or offsets, offsets outside the
  // data or overlapping another tensor, or a byte size that disagrees with dtype x shape (a running
  // product of element size and shape entries past 64 bits is refused, even before a zero entry).
  static SafetensorsFile open(const std::string& path);

  // Validates a header (the JSON text) against a data section of `data_size` bytes. `source`
  // names the file in messages. Tensors come back sorted by offset.
  static std::vector<TensorInfo> parse_header(const std::string& json_text, uint64_t data_size,
                                              const std::string& source,
                                              std::map<std::string, std::string>* metadata = nullptr);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // First byte of a tensor's data inside the mapping (valid while the mapping lives).
  const uint8_t* data(const TensorInfo& info) const { return mapping_->data() + data_offset_ + info.begin; }
  uint64_t data_offset() const { return data_offset_; }
  const std::shared_ptr<MappedFile>& mapping() const { return mapping_; }

 private:
  std::string path_;
  std::shared_ptr<MappedFile> mapping_;
  uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A sharded checkpoint's `model.safetensors.index.json`: tensor name -> shard file name.
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;
  std::map<std::string, std::string> metadata;  // e.g. total_size, kept as text

  // Throws Error for invalid JSON, a missing or non-object weight_map, or a non-string entry.
  static SafetensorsIndex load(const std::string& path);
};

}  // namespace focusvla::io
