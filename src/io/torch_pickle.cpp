#include "focusvla/io/torch_pickle.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>

#include "focusvla/core/error.h"

namespace focusvla::io {
namespace {

// A Python value as far as state dicts need them.
struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { none, boolean, integer, floating, string, tuple, list, dict, global, mark, tensor, storage };
  Kind kind = Kind::none;
  int64_t integer = 0;
  double floating = 0;
  std::string text;    // string; global: "module.name"
  std::vector<ValuePtr> items;                          // tuple, list
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;   // dict, in insertion order
  torch::Tensor tensor;                                 // tensor, storage (1-D, flat)
};

ValuePtr make(Value::Kind kind) {
  auto v = std::make_shared<Value>();
  v->kind = kind;
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
  Unpickler(const std::string& path, const std::string& bytes, caffe2::serialize::PyTorchStreamReader& reader,
            std::string record_prefix)
      : path_(path), data_(bytes), reader_(reader), prefix_(std::move(record_prefix)) {}

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
    v->items = std::move(items);
    push(v);
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
    for (size_t i = 0; i < kv.size(); i += 2) dict->entries.emplace_back(kv[i], kv[i + 1]);
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
    auto [data, size] = reader_.getRecord(record);
    const size_t element = c10::elementSize(dtype);
    check(static_cast<uint64_t>(numel) <= size / element, path_,
          "storage '" + key + "' claims " + std::to_string(numel) + " elements but its record holds " +
              std::to_string(size) + " bytes");
    auto holder = std::make_shared<at::DataPtr>(std::move(data));
    auto v = make(Value::Kind::storage);
    v->tensor = numel == 0 ? torch::empty({0}, dtype)
                           : torch::from_blob(holder->get(), {numel}, [holder](void*) {}, torch::TensorOptions().dtype(dtype));
    storages_[key] = v;
    return v;
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

  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
  ValuePtr rebuild_tensor(const ValuePtr& args) {
    check(args->items.size() >= 4 && args->items[0]->kind == Value::Kind::storage &&
              args->items[1]->kind == Value::Kind::integer,
          where(), "malformed _rebuild_tensor_v2 arguments");
    const torch::Tensor& storage = args->items[0]->tensor;
    const int64_t offset = args->items[1]->integer;
    const auto size = int_tuple(args->items[2], "tensor size");
    const auto stride = int_tuple(args->items[3], "tensor stride");
    check(size.size() == stride.size(), where(), "tensor size and stride differ in rank");
    int64_t last = offset, numel = 1;
    for (size_t i = 0; i < size.size(); ++i) {
      check(size[i] >= 0 && stride[i] >= 0, where(), "negative tensor size or stride");
      numel *= size[i];
      if (size[i] > 0) last += (size[i] - 1) * stride[i];
    }
    check(offset >= 0 && (numel == 0 || last < storage.numel()), where(),
          "tensor view (offset " + std::to_string(offset) + ") reaches past its storage of " +
              std::to_string(storage.numel()) + " elements");
    auto v = make(Value::Kind::tensor);
    v->tensor = numel == 0 ? torch::empty(size, storage.options()) : storage.as_strided(size, stride, offset);
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
  size_t pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, ValuePtr> memo_;
  std::map<std::string, ValuePtr> storages_;
};

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> read_torch_state_dict(const std::string& path) {
  {
    std::ifstream in(path, std::ios::binary);
    check(static_cast<bool>(in), path, "cannot open");
    char magic[4] = {0, 0, 0, 0};
    in.read(magic, 4);
    check(in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4, path,
          "not a torch.save zip archive (legacy or corrupt file); re-save it with torch.save in torch >= 1.6");
  }
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    check(reader.hasRecord("data.pkl"), path, "archive has no data.pkl (not a torch.save file)");
    auto [pkl, size] = reader.getRecord("data.pkl");
    const std::string bytes(static_cast<const char*>(pkl.get()), size);
    Unpickler unpickler(path, bytes, reader, "");
    const ValuePtr root = unpickler.run();
    check(root->kind == Value::Kind::dict, path, std::string("not a state dict: the archive holds a ") + kind_name(root->kind));
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& [key, value] : root->entries) {
      check(key->kind == Value::Kind::string, path, std::string("not a state dict: a key is a ") + kind_name(key->kind));
      check(value->kind == Value::Kind::tensor, path,
            "not a state dict: entry '" + key->text + "' holds a " + kind_name(value->kind) + ", not a tensor");
      out.emplace_back(key->text, value->tensor);
    }
    return out;
  } catch (const c10::Error& e) {
    throw Error(path + ": cannot read torch.save archive (" + e.what_without_backtrace() + ")");
  }
}

}  // namespace focusvla::io
