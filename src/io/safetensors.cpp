#include "focusvla/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"

namespace focusvla::io {
namespace {

// The reference implementation refuses headers above 100 MB; so do we, before allocating.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8},       {DType::F32, "F32", 4},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},     {DType::I64, "I64", 8},         {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},       {DType::I8, "I8", 1},           {DType::U64, "U64", 8},
    {DType::U32, "U32", 4},       {DType::U16, "U16", 2},         {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},     {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

const DTypeEntry& entry_of(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e;
  throw Error("safetensors: invalid DType value");
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

std::string describe_tensor(const std::string& source, const std::string& name) {
  return source + ": tensor '" + name + "'";
}

// A JSON value for a message, cut short: a malformed field may be megabytes long.
std::string brief(const nlohmann::json& j) {
  std::string text = j.dump();
  return text.size() <= 64 ? text : text.substr(0, 60) + " ...";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

bool has_zero(const std::vector<int64_t>& shape) { return std::find(shape.begin(), shape.end(), 0) != shape.end(); }

// Every entry a non-negative integer that fits int64 (2^63 and above would turn negative).
std::vector<int64_t> parse_shape(const nlohmann::json& j, const std::string& what) {
  check(j.is_array(), what, "shape is not an array");
  std::vector<int64_t> shape;
  for (const auto& d : j) {
    check(d.is_number_integer() && (d.is_number_unsigned() || d.get<int64_t>() >= 0), what,
          "shape entry " + brief(d) + " is not a non-negative integer");
    if (d.is_number_unsigned())
      check(d.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what,
            "shape entry " + brief(d) + " exceeds int64");
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// element size * numel, multiplied in shape order; Error when a running product overflows 64
// bits, even before a zero entry: LibTorch refuses such a shape too (c10::safe_multiplies_u64),
// so accepting it would only move the error to load time.
uint64_t expected_bytes(const std::vector<int64_t>& shape, size_t element_size, const std::string& what) {
  uint64_t bytes = element_size;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes))
      throw Error(what + ": shape " + shape_text(shape) + " overflows 64-bit byte count");
  return bytes;
}

TensorInfo parse_entry(const std::string& name, const nlohmann::json& j, uint64_t data_size,
                       const std::string& source) {
  const std::string what = describe_tensor(source, name);
  check(j.is_object(), what, "entry is not a JSON object");
  check(j.contains("dtype") && j["dtype"].is_string(), what, "missing string field 'dtype'");
  check(j.contains("shape"), what, "missing field 'shape'");
  check(j.contains("data_offsets"), what, "missing field 'data_offsets'");
  TensorInfo info;
  info.name = name;
  try {
    info.dtype = parse_dtype(j["dtype"].get<std::string>());
  } catch (const Error& e) {
    throw Error(what + ": " + e.what());
  }
  info.shape = parse_shape(j["shape"], what);
  const auto& offsets = j["data_offsets"];
  check(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
            offsets[1].is_number_unsigned(),
        what, "data_offsets must be two non-negative integers, got " + brief(offsets));
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  const std::string range = "[" + std::to_string(info.begin) + ", " + std::to_string(info.end) + ")";
  check(info.begin <= info.end, what, "data_offsets " + range + " end before they begin");
  check(info.end <= data_size, what,
        "data_offsets " + range + " outside the " + std::to_string(data_size) + "-byte data section");
  const uint64_t bytes = expected_bytes(info.shape, dtype_size(info.dtype), what);
  check(bytes == info.nbytes(), what,
        "shape " + shape_text(info.shape) + " of " + dtype_name(info.dtype) + " needs " + std::to_string(bytes) +
            " bytes but data_offsets " + range + " hold " + std::to_string(info.nbytes()));
  return info;
}

void check_no_overlap(const std::vector<TensorInfo>& sorted, const std::string& source) {
  const TensorInfo* previous = nullptr;
  for (const auto& t : sorted) {
    if (t.nbytes() == 0) continue;
    if (previous != nullptr && t.begin < previous->end)
      throw Error(describe_tensor(source, t.name) + ": data_offsets [" + std::to_string(t.begin) + ", " +
                  std::to_string(t.end) + ") overlap tensor '" + previous->name + "' [" +
                  std::to_string(previous->begin) + ", " + std::to_string(previous->end) + ")");
    previous = &t;
  }
}

}  // namespace

DType parse_dtype(const std::string& name) {
  for (const auto& e : kDTypes)
    if (name == e.name) return e.dtype;
  throw Error("unknown dtype '" + name + "'");
}

const char* dtype_name(DType dtype) { return entry_of(dtype).name; }
size_t dtype_size(DType dtype) { return entry_of(dtype).size; }

int64_t TensorInfo::numel() const {
  const auto fail = [&](const std::string& problem) { throw Error("tensor '" + name + "': shape " + shape_text(shape) + problem); };
  if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; })) fail(" has a negative entry");
  if (has_zero(shape)) return 0;
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) fail(": numel overflows int64");
  return n;
}

std::vector<TensorInfo> SafetensorsFile::parse_header(const std::string& json_text, uint64_t data_size,
                                                      const std::string& source,
                                                      std::map<std::string, std::string>* metadata) {
  const nlohmann::json header = parse_json(json_text, source + " header");
  check(header.is_object(), source, "header is not a JSON object");
  std::vector<TensorInfo> tensors;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      check(value.is_object(), source, "__metadata__ is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        check(text.is_string(), source, "__metadata__['" + key + "'] is not a string");
        if (metadata != nullptr) (*metadata)[key] = text.get<std::string>();
      }
      continue;
    }
    tensors.push_back(parse_entry(name, value, data_size, source));
  }
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  check_no_overlap(tensors, source);
  return tensors;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  file.mapping_ = MappedFile::open(path);
  const uint64_t size = file.mapping_->size();
  check(size >= 8, path, "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  const uint64_t header_len = read_u64_le(file.mapping_->data());
  check(header_len <= size - 8, path,
        "header length " + std::to_string(header_len) + " runs past the end of the " + std::to_string(size) +
            "-byte file (truncated or not a safetensors file)");
  check(header_len <= kMaxHeaderBytes, path, "header length " + std::to_string(header_len) + " exceeds 100 MB");
  const std::string json_text(reinterpret_cast<const char*>(file.mapping_->data() + 8), header_len);
  file.data_offset_ = 8 + header_len;
  file.tensors_ = parse_header(json_text, size - file.data_offset_, path, &file.metadata_);
  for (size_t i = 0; i < file.tensors_.size(); ++i) file.index_[file.tensors_[i].name] = i;
  return file;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

SafetensorsIndex SafetensorsIndex::load(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  check(j.is_object(), path, "not a JSON object");
  check(j.contains("weight_map") && j["weight_map"].is_object(), path, "missing object 'weight_map'");
  SafetensorsIndex index;
  for (const auto& [name, file] : j["weight_map"].items()) {
    check(file.is_string(), path, "weight_map['" + name + "'] is not a file name");
    const std::string shard = file.get<std::string>();
    check(!shard.empty() && shard.find('/') == std::string::npos && shard != "..", path,
          "weight_map['" + name + "'] = '" + shard + "' is not a plain file name in the same directory");
    index.weight_map[name] = shard;
  }
  if (j.contains("metadata") && j["metadata"].is_object())
    for (const auto& [key, value] : j["metadata"].items())
      index.metadata[key] = value.is_string() ? value.get<std::string>() : value.dump();
  return index;
}

}  // namespace focusvla::io
