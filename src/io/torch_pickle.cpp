#include "focusvla/io/torch_pickle.h"

#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <stdexcept>

#include "focusvla/core/error.h"
#include "focusvla/io/mapped_file.h"
#include "torch_pickle_archive.h"

namespace focusvla::io {
namespace {

// A Python value as far as state dicts need them.
struct Value;
using ValuePtr = std::shared_ptr<Value>;

// Values nest at most this deep (a state dict needs about 4). With containers never modified once
// stored in another (see Unpickler::adopt), the depth is exact and bounds the recursion of the
// shared_ptr destructors.
constexpr uint32_t kMaxDepth = 100;

std::atomic<int64_t> live_values{0};

// _rebuild_tensor_v2's arguments; the tensor is made (and checked) once its state-dict key is known.
struct TensorView {
  torch::Tensor storage;  // 1-D, flat
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};

struct Value {
  Value() { ++live_values; }
  ~Value() { --live_values; }
  Value(const Value&) = delete;
  Value& operator=(const Value&) = delete;
  enum class Kind { none, boolean, integer, floating, string, tuple, list, dict, global, mark, tensor, storage };
  Kind kind = Kind::none;
  int64_t integer = 0;
  double floating = 0;
  std::string text;    // string; global: "module.name"
  std::vector<ValuePtr> items;                          // tuple, list
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;   // dict, in insertion order
  torch::Tensor tensor;                                 // storage (1-D, flat)
  TensorView view;                                      // tensor
  uint32_t depth = 0;   // containers: 1 + the deepest item; everything else 0
  bool stored = false;  // inside another value; a stored container is never modified again
};

bool is_container(Value::Kind kind) {
  return kind == Value::Kind::tuple || kind == Value::Kind::list || kind == Value::Kind::dict;
}

ValuePtr make(Value::Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
  v->depth = is_container(kind) ? 1 : 0;
  return v;
}

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::none: return "None";
    case Value::Kind::boolean: return "bool";
    case Value::Kind::integer: return "int";
    case Value::Kind::floating: return "float";
    case Value::Kind::string: return "str";
    case Value::Kind::tuple: return "tuple";
    case Value::Kind::list: return "list";
    case Value::Kind::dict: return "dict";
    case Value::Kind::global: return "global";
    case Value::Kind::mark: return "mark";
    case Value::Kind::tensor: return "Tensor";
    case Value::Kind::storage: return "Storage";
  }
  return "?";
}

// storage class name -> dtype ("torch.FloatStorage" -> float32).
torch::ScalarType storage_dtype(const std::string& name, const std::string& where) {
  static const std::map<std::string, torch::ScalarType> kinds = {
      {"torch.DoubleStorage", torch::kFloat64}, {"torch.FloatStorage", torch::kFloat32},
      {"torch.HalfStorage", torch::kFloat16},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},     {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},    {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},     {"torch.BoolStorage", torch::kBool},
      {"torch.UInt16Storage", torch::kUInt16},  {"torch.UInt32Storage", torch::kUInt32},
      {"torch.UInt64Storage", torch::kUInt64},  {"torch.Float8_e4m3fnStorage", torch::kFloat8_e4m3fn},
      {"torch.Float8_e5m2Storage", torch::kFloat8_e5m2}};
  auto it = kinds.find(name);
  check(it != kinds.end(), where, "unsupported storage type " + name);
  return it->second;
}

class Unpickler {
 public:
  // `mapping` (may be null) is the file mapped, `stored` its uncompressed records: storages found
  // there are views into the mapping instead of copies.
  Unpickler(const std::string& path, const std::string& bytes, caffe2::serialize::PyTorchStreamReader& reader,
            std::string record_prefix, std::shared_ptr<MappedFile> mapping = nullptr,
            std::map<std::string, ArchiveSpan> stored = {})
      : path_(path),
        data_(bytes),
        reader_(reader),
        prefix_(std::move(record_prefix)),
        mapping_(std::move(mapping)),
        stored_(std::move(stored)) {}

  ValuePtr run() {
    for (;;) {
      const uint8_t op = read_u8();
      if (op == '.') break;
      step(op);
    }
    check(stack_.size() == 1, where(), "pickle ended with " + std::to_string(stack_.size()) + " values on the stack");
    return stack_.back();
  }

 private:
  std::string where() const { return path_ + ": pickle byte " + std::to_string(pos_); }

  void need(size_t n) const {
    check(n <= data_.size() - pos_, where(), "truncated (needs " + std::to_string(n) + " more bytes)");
  }
  uint8_t read_u8() {
    need(1);
    return static_cast<uint8_t>(data_[pos_++]);
  }
  uint64_t read_le(size_t n) {
    need(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += n;
    return v;
  }
  std::string read_bytes(uint64_t n) {
    need(n);
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string read_line() {
    const size_t end = data_.find('\n', pos_);
    check(end != std::string::npos, where(), "truncated GLOBAL");
    std::string s = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }

  ValuePtr pop() {
    check(!stack_.empty(), where(), "stack underflow");
    ValuePtr v = stack_.back();
    stack_.pop_back();
    check(v->kind != Value::Kind::mark, where(), "unexpected MARK");
    return v;
  }
  ValuePtr& top() {
    check(!stack_.empty(), where(), "stack underflow");
    return stack_.back();
  }
  // Values pushed since the last MARK (removed from the stack, mark included).
  std::vector<ValuePtr> pop_to_mark() {
    check(!marks_.empty(), where(), "no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    check(mark <= stack_.size(), where(), "corrupt MARK");
    std::vector<ValuePtr> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  void push_int(int64_t i) {
    auto v = make(Value::Kind::integer);
    v->integer = i;
    push(v);
  }
  void push_string(std::string s) {
    auto v = make(Value::Kind::string);
    v->text = std::move(s);
    push(v);
  }
  void push_tuple(std::vector<ValuePtr> items) {
    auto v = make(Value::Kind::tuple);
    for (const auto& item : items) adopt(*v, item, "TUPLE");
    v->items = std::move(items);
    push(v);
  }

  // `item` goes into `container`. Refuses a container put into itself and nesting deeper than
  // kMaxDepth; marks the item stored. Together with check_unstored this rules out cycles: closing
  // one means modifying a container that is already inside another value.
  // (Runs for every item: messages are built only on failure.)
  void adopt(Value& container, const ValuePtr& item, const char* op) {
    if (item.get() == &container)
      throw Error(where() + ": " + op + " would put a " + kind_name(container.kind) + " inside itself (cyclic pickle)");
    const uint32_t depth = item->depth + 1;
    if (depth > kMaxDepth)
      throw Error(where() + ": values nested deeper than " + std::to_string(kMaxDepth) + " levels");
    container.depth = std::max(container.depth, depth);
    item->stored = true;
  }
  // Python's pickler fills a list or dict before storing it anywhere; only cyclic data does not.
  void check_unstored(const Value& container, const char* op) {
    if (container.stored)
      throw Error(where() + ": " + op + " to a " + kind_name(container.kind) +
                  " already inside another value (cyclic pickle, or one built outside-in; never a state dict)");
  }
  void memo_put(uint64_t key) { memo_[key] = top(); }
  void memo_get(uint64_t key) {
    auto it = memo_.find(key);
    check(it != memo_.end(), where(), "memo key " + std::to_string(key) + " not set");
    push(it->second);
  }
  void set_items(const ValuePtr& dict, const std::vector<ValuePtr>& kv) {
    check(dict->kind == Value::Kind::dict, where(), std::string("SETITEMS on a ") + kind_name(dict->kind));
    check(kv.size() % 2 == 0, where(), "SETITEMS with an odd number of values");
    check_unstored(*dict, "SETITEMS");
    for (size_t i = 0; i < kv.size(); i += 2) {
      adopt(*dict, kv[i], "SETITEMS");
      adopt(*dict, kv[i + 1], "SETITEMS");
      dict->entries.emplace_back(kv[i], kv[i + 1]);
    }
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: read_u8(); return;                 // PROTO
      case 0x95: read_le(8); return;                // FRAME
      case '}': push(make(Value::Kind::dict)); return;
      case ']': push(make(Value::Kind::list)); return;
      case ')': push_tuple({}); return;
      case '(':
        marks_.push_back(stack_.size());
        return;
      case 'q': memo_put(read_u8()); return;        // BINPUT
      case 'r': memo_put(read_le(4)); return;       // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); return;    // MEMOIZE
      case 'h': memo_get(read_u8()); return;        // BINGET
      case 'j': memo_get(read_le(4)); return;       // LONG_BINGET
      case 'N': push(make(Value::Kind::none)); return;
      case 0x88:
      case 0x89: {                                  // NEWTRUE / NEWFALSE
        auto v = make(Value::Kind::boolean);
        v->integer = op == 0x88;
        push(v);
        return;
      }
      case 'K': push_int(read_u8()); return;                                  // BININT1
      case 'M': push_int(static_cast<int64_t>(read_le(2))); return;           // BININT2
      case 'J': push_int(static_cast<int32_t>(read_le(4))); return;           // BININT
      case 0x8a: {                                                            // LONG1
        const uint8_t n = read_u8();
        check(n <= 8, where(), "integer of " + std::to_string(n) + " bytes is too large");
        uint64_t raw = n ? read_le(n) : 0;
        if (n > 0 && n < 8 && (raw >> (8 * n - 1)) & 1) raw |= ~uint64_t{0} << (8 * n);  // sign-extend
        push_int(static_cast<int64_t>(raw));
        return;
      }
      case 'G': {                                                             // BINFLOAT (big endian)
        need(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<uint8_t>(data_[pos_ + i]);
        pos_ += 8;
        auto v = make(Value::Kind::floating);
        std::memcpy(&v->floating, &bits, 8);
        push(v);
        return;
      }
      case 'X': push_string(read_bytes(read_le(4))); return;                  // BINUNICODE
      case 0x8c: push_string(read_bytes(read_u8())); return;                  // SHORT_BINUNICODE
      case 0x8d: push_string(read_bytes(read_le(8))); return;                 // BINUNICODE8
      case 'c': {                                                             // GLOBAL
        auto v = make(Value::Kind::global);
        const std::string module = read_line();
        v->text = module + "." + read_line();
        push(v);
        return;
      }
      case 0x93: {                                                            // STACK_GLOBAL
        ValuePtr name = pop(), module = pop();
        check(name->kind == Value::Kind::string && module->kind == Value::Kind::string, where(), "bad STACK_GLOBAL");
        auto v = make(Value::Kind::global);
        v->text = module->text + "." + name->text;
        push(v);
        return;
      }
      case 't': push_tuple(pop_to_mark()); return;
      case 0x85: { ValuePtr a = pop(); push_tuple({a}); return; }
      case 0x86: { ValuePtr b = pop(), a = pop(); push_tuple({a, b}); return; }
      case 0x87: { ValuePtr c = pop(), b = pop(), a = pop(); push_tuple({a, b, c}); return; }
      case 's': { ValuePtr v = pop(), k = pop(); set_items(top(), {k, v}); return; }
      case 'u': { auto kv = pop_to_mark(); set_items(top(), kv); return; }
      case 'a': { ValuePtr v = pop(); append(top(), {v}); return; }
      case 'e': { auto items = pop_to_mark(); append(top(), items); return; }
      case 'Q': { ValuePtr pid = pop(); push(load_storage(pid)); return; }   // BINPERSID
      case 'R': { ValuePtr args = pop(), callable = pop(); push(call(callable, args)); return; }
      case 'b': { pop(); top(); return; }  // BUILD: attributes such as a state dict's _metadata
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        throw Error(where() + ": unsupported pickle opcode " + hex);
      }
    }
  }

  void append(const ValuePtr& list, const std::vector<ValuePtr>& items) {
    check(list->kind == Value::Kind::list, where(), std::string("APPEND to a ") + kind_name(list->kind));
    check_unstored(*list, "APPEND");
    for (const auto& item : items) adopt(*list, item, "APPEND");
    list->items.insert(list->items.end(), items.begin(), items.end());
  }

  // ('storage', <class torch.XStorage>, key, location, numel) -> the record data/<key>.
  ValuePtr load_storage(const ValuePtr& pid) {
    check(pid->kind == Value::Kind::tuple && pid->items.size() >= 5 && pid->items[0]->text == "storage" &&
              pid->items[1]->kind == Value::Kind::global && pid->items[2]->kind == Value::Kind::string &&
              pid->items[4]->kind == Value::Kind::integer,
          where(), "malformed storage id");
    const std::string key = pid->items[2]->text;
    auto cached = storages_.find(key);
    if (cached != storages_.end()) return cached->second;
    const torch::ScalarType dtype = storage_dtype(pid->items[1]->text, where());
    const int64_t numel = pid->items[4]->integer;
    const std::string record = prefix_ + "data/" + key;
    check(numel >= 0, where(), "negative storage size");
    check(reader_.hasRecord(record), path_, "storage record '" + record + "' is missing");
    auto v = make(Value::Kind::storage);
    if (torch::Tensor mapped = mapped_storage(record, numel, dtype); mapped.defined()) {
      v->tensor = std::move(mapped);
      storages_[key] = v;
      return v;
    }
    auto [data, size] = reader_.getRecord(record);
    const size_t element = c10::elementSize(dtype);
    check(static_cast<uint64_t>(numel) <= size / element, path_,
          "storage '" + key + "' claims " + std::to_string(numel) + " elements but its record holds " +
              std::to_string(size) + " bytes");
    auto holder = std::make_shared<at::DataPtr>(std::move(data));
    v->tensor = numel == 0 ? torch::empty({0}, dtype)
                           : torch::from_blob(holder->get(), {numel}, [holder](void*) {}, torch::TensorOptions().dtype(dtype));
    storages_[key] = v;
    return v;
  }

  // The storage as a view into the mapped file (zero-copy, like a safetensors tensor): when the
  // record is stored uncompressed where LibTorch's reader locates it, aligned for its type and
  // large enough. Undefined otherwise (the caller copies it through the reader, which reports
  // what is wrong).
  torch::Tensor mapped_storage(const std::string& record, int64_t numel, torch::ScalarType dtype) {
    if (mapping_ == nullptr || numel == 0) return {};
    const auto it = stored_.find(record);
    if (it == stored_.end()) return {};
    const ArchiveSpan span = it->second;
    const size_t element = c10::elementSize(dtype);
    if (span.offset % element != 0 || static_cast<uint64_t>(numel) > span.size / element) return {};
    if (reader_.getRecordOffset(record) != span.offset) return {};
    std::shared_ptr<MappedFile> keep_alive = mapping_;
    return torch::from_blob(
        mapping_->mutable_data() + span.offset, {numel}, [keep_alive](void*) mutable { keep_alive.reset(); },
        torch::TensorOptions().dtype(dtype));
  }

  std::vector<int64_t> int_tuple(const ValuePtr& v, const char* what) {
    check(v->kind == Value::Kind::tuple, where(), std::string(what) + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& item : v->items) {
      check(item->kind == Value::Kind::integer, where(), std::string(what) + " holds a non-integer");
      out.push_back(item->integer);
    }
    return out;
  }

  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]); the view
  // is checked in make_tensor, once the key is known.
  ValuePtr rebuild_tensor(const ValuePtr& args) {
    check(args->items.size() >= 4 && args->items[0]->kind == Value::Kind::storage &&
              args->items[1]->kind == Value::Kind::integer,
          where(), "malformed _rebuild_tensor_v2 arguments");
    auto v = make(Value::Kind::tensor);
    v->view.storage = args->items[0]->tensor;
    v->view.offset = args->items[1]->integer;
    v->view.size = int_tuple(args->items[2], "tensor size");
    v->view.stride = int_tuple(args->items[3], "tensor stride");
    check(v->view.size.size() == v->view.stride.size(), where(), "tensor size and stride differ in rank");
    return v;
  }

  // Only the callables a state dict needs; anything else is refused by name.
  ValuePtr call(const ValuePtr& callable, const ValuePtr& args) {
    check(callable->kind == Value::Kind::global, where(), std::string("cannot call a ") + kind_name(callable->kind));
    check(args->kind == Value::Kind::tuple, where(), "REDUCE arguments are not a tuple");
    const std::string& name = callable->text;
    if (name == "collections.OrderedDict") return make(Value::Kind::dict);
    if (name == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(args);
    if (name == "torch._utils._rebuild_parameter") {
      check(!args->items.empty() && args->items[0]->kind == Value::Kind::tensor, where(), "malformed _rebuild_parameter");
      return args->items[0];
    }
    throw Error(path_ + ": not a plain state dict: it holds a '" + name + "' object");
  }

  std::string path_;
  const std::string& data_;
  caffe2::serialize::PyTorchStreamReader& reader_;
  std::string prefix_;
  std::shared_ptr<MappedFile> mapping_;
  std::map<std::string, ArchiveSpan> stored_;
  size_t pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, ValuePtr> memo_;
  std::map<std::string, ValuePtr> storages_;
};

std::string int_list(const std::vector<int64_t>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out + "]";
}

// The tensor a _rebuild_tensor_v2 call described. Element count, byte count and the furthest
// element are computed without int64 overflow and checked against the storage before LibTorch
// sees the view; `what` names the file and the key.
torch::Tensor make_tensor(const TensorView& v, const std::string& what) {
  const auto fail = [&](const std::string& problem) { throw Error(what + ": " + problem); };
  const std::string size = "size " + int_list(v.size);
  bool empty = false;
  for (size_t i = 0; i < v.size.size(); ++i) {
    if (v.size[i] < 0 || v.stride[i] < 0) fail("negative " + size + " or stride " + int_list(v.stride));
    empty = empty || v.size[i] == 0;
  }
  if (empty) {  // no element is read: only the shape must be one LibTorch accepts
    try {
      return torch::empty(v.size, v.storage.options());
    } catch (const c10::Error& e) {
      fail("LibTorch refuses " + size + " (" + e.what_without_backtrace() + ")");
    }
  }
  int64_t numel = 1, bytes = 0;
  for (int64_t d : v.size)
    if (__builtin_mul_overflow(numel, d, &numel)) fail(size + " overflows the int64 element count");
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(v.storage.element_size()), &bytes))
    fail(size + " of " + c10::toString(v.storage.scalar_type()) + " overflows the int64 byte count");
  const auto layout = [&] {
    return "view (offset " + std::to_string(v.offset) + ", " + size + ", stride " + int_list(v.stride) + ")";
  };
  if (v.offset < 0) fail(layout() + " has a negative offset");
  int64_t last = v.offset;  // the furthest element the view reads
  for (size_t i = 0; i < v.size.size(); ++i) {
    int64_t step = 0;
    if (__builtin_mul_overflow(v.size[i] - 1, v.stride[i], &step) || __builtin_add_overflow(last, step, &last))
      fail(layout() + " overflows int64");
  }
  if (last >= v.storage.numel())
    fail(layout() + " reaches past its storage of " + std::to_string(v.storage.numel()) + " elements");
  return v.storage.as_strided(v.size, v.stride, v.offset);
}

// ---------------------------------------------------------------------------------------------
// The archive's `version` record, checked before LibTorch's reader opens the file (see
// torch_pickle_archive.h for why and how it is found).

// The record for a message: at most 32 characters, control bytes as '?', surrounding space trimmed.
std::string shown(const std::string& text) {
  std::string out;
  for (char c : text.substr(0, 32)) out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
  const size_t begin = out.find_first_not_of(" ?"), end = out.find_last_not_of(" ?");
  return begin == std::string::npos ? "" : out.substr(begin, end - begin + 1) + (text.size() > 32 ? "..." : "");
}

// The version as LibTorch reads it (std::stoull: leading space, a sign, decimal digits, the rest
// ignored), with checked parsing, and within the versions this LibTorch reads.
void check_version(const std::string& text, const std::string& path) {
  namespace ser = caffe2::serialize;
  const std::string what = path + ": version record '" + shown(text) + "'";
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  const bool negative = i < text.size() && text[i] == '-';
  if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data() + i, text.data() + text.size(), value);
  check(error != std::errc::invalid_argument, what, "is not a number");
  check(error != std::errc::result_out_of_range, what, "is out of range (more than 64 bits)");
  check(!negative && value >= ser::kMinSupportedFileFormatVersion && value <= ser::kMaxSupportedFileFormatVersion, what,
        "is not a format version this LibTorch reads (" + std::to_string(ser::kMinSupportedFileFormatVersion) +
            ".." + std::to_string(ser::kMaxSupportedFileFormatVersion) + ")");
}

std::unique_ptr<caffe2::serialize::PyTorchStreamReader> open_archive(const std::string& path) {
  if (const auto version = torch_archive_version_record(path)) check_version(*version, path);
  try {
    return std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const std::out_of_range& e) {  // a layout the version walk did not follow: LibTorch's stoull
    throw Error(path + ": cannot read torch.save archive: version record out of range (" + e.what() + ")");
  }
}

}  // namespace

int64_t detail::live_pickle_values() { return live_values.load(); }

std::vector<std::pair<std::string, torch::Tensor>> read_torch_state_dict(const std::string& path,
                                                                         std::shared_ptr<MappedFile>* mapping) {
  {
    std::ifstream in(path, std::ios::binary);
    check(static_cast<bool>(in), path, "cannot open");
    char magic[4] = {0, 0, 0, 0};
    in.read(magic, 4);
    check(in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4, path,
          "not a torch.save zip archive (legacy or corrupt file); re-save it with torch.save in torch >= 1.6");
  }
  try {
    const auto archive = open_archive(path);
    auto& reader = *archive;
    check(reader.hasRecord("data.pkl"), path, "archive has no data.pkl (not a torch.save file)");
    auto [pkl, size] = reader.getRecord("data.pkl");
    const std::string bytes(static_cast<const char*>(pkl.get()), size);
    auto file = MappedFile::open(path);
    auto stored = torch_archive_stored_records(*file);
    Unpickler unpickler(path, bytes, reader, "", file, std::move(stored));
    const ValuePtr root = unpickler.run();
    check(root->kind == Value::Kind::dict, path, std::string("not a state dict: the archive holds a ") + kind_name(root->kind));
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& [key, value] : root->entries) {
      check(key->kind == Value::Kind::string, path, std::string("not a state dict: a key is a ") + kind_name(key->kind));
      check(value->kind == Value::Kind::tensor, path,
            "not a state dict: entry '" + key->text + "' holds a " + kind_name(value->kind) + ", not a tensor");
      out.emplace_back(key->text, make_tensor(value->view, path + ": tensor '" + key->text + "'"));
    }
    if (mapping != nullptr) *mapping = std::move(file);
    return out;
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Error(path + ": cannot read torch.save archive (" + e.what_without_backtrace() + ")");
  } catch (const std::exception& e) {  // anything else LibTorch's reader lets escape
    throw Error(path + ": cannot read torch.save archive (" + e.what() + ")");
  }
}

}  // namespace focusvla::io
