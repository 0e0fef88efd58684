#include "focusvla/serve/msgpack_numpy.h"

#include "focusvla/text/prompt.h"

#include <msgpack.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

namespace focusvla::serve {
namespace {

// Bounds on what one request may build, whatever the frame size: nesting, map entries, array
// elements (a shape, a state list). Strings and bytes are bounded by the frame itself.
msgpack::unpack_limit request_limits(size_t frame_size) {
  return msgpack::unpack_limit(/*array=*/1 << 16, /*map=*/1 << 12, /*str=*/frame_size, /*bin=*/frame_size,
                               /*ext=*/0, /*depth=*/32);
}

// Strings and bytes point into the frame instead of being copied (the frame outlives decoding).
bool reference_frame(msgpack::type::object_type, std::size_t, void*) { return true; }

std::string_view bytes_of(const msgpack::object& o) {
  if (o.type == msgpack::type::STR) return {o.via.str.ptr, o.via.str.size};
  if (o.type == msgpack::type::BIN) return {o.via.bin.ptr, o.via.bin.size};
  return {};
}

bool is_text(const msgpack::object& o) { return o.type == msgpack::type::STR || o.type == msgpack::type::BIN; }

// A map's value under `key` (a str or bin key), or nullptr.
const msgpack::object* find(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const msgpack::object_kv& kv = map.via.map.ptr[i];
    if (is_text(kv.key) && bytes_of(kv.key) == key) return &kv.val;
  }
  return nullptr;
}

// `key` literally, else as a '/'-separated path through nested maps.
const msgpack::object* lookup(const msgpack::object& root, const std::string& key) {
  if (const msgpack::object* found = find(root, key)) return found;
  const msgpack::object* at = &root;
  size_t start = 0;
  while (at != nullptr) {
    const size_t slash = key.find('/', start);
    if (slash == std::string::npos) return find(*at, std::string_view(key).substr(start));
    at = find(*at, std::string_view(key).substr(start, slash - start));
    start = slash + 1;
  }
  return nullptr;
}

std::string type_name(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return "a boolean";
    case msgpack::type::POSITIVE_INTEGER:
    case msgpack::type::NEGATIVE_INTEGER: return "an integer";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return "a float";
    case msgpack::type::STR: return "a string";
    case msgpack::type::BIN: return "bytes";
    case msgpack::type::ARRAY: return "a list";
    case msgpack::type::MAP: return find(o, "__ndarray__") ? "a numpy array" : "a map";
    case msgpack::type::EXT: return "an extension value";
  }
  return "an unknown value";
}

// numpy dtype strings (dtype.str): byte order, kind, item size.
struct NumpyDtype {
  char kind = 0;  // 'u', 'i', 'f', 'b'
  int64_t itemsize = 0;
  bool big_endian = false;
  std::string text;
};

std::optional<NumpyDtype> parse_dtype(std::string_view s) {
  if (s.size() < 3 || s.size() > 4 || (s[0] != '<' && s[0] != '>' && s[0] != '|' && s[0] != '='))
    return std::nullopt;
  NumpyDtype d;
  d.text = std::string(s);
  d.big_endian = s[0] == '>';
  d.kind = s[1];
  int64_t size = 0;
  for (char c : s.substr(2)) {
    if (c < '0' || c > '9') return std::nullopt;
    size = size * 10 + (c - '0');
  }
  d.itemsize = size;
  if (size < 1 || size > 16) return std::nullopt;
  return d;
}

std::string dtype_display(const NumpyDtype& d) {
  if (d.big_endian) return "'" + d.text + "' (big-endian)";
  if (d.kind == 'u' && d.itemsize == 1) return "uint8";
  if (d.kind == 'f') return "float" + std::to_string(8 * d.itemsize);
  if (d.kind == 'i') return "int" + std::to_string(8 * d.itemsize);
  if (d.kind == 'u') return "uint" + std::to_string(8 * d.itemsize);
  if (d.kind == 'b') return "bool";
  return "'" + d.text + "'";
}

// A numpy array of the request, its bytes still in the frame.
struct NdArray {
  NumpyDtype dtype;
  std::vector<int64_t> shape;
  std::string_view data;

  std::string describe() const {
    std::string dims;
    for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
    if (shape.size() == 1) dims += ",";
    return dtype_display(dtype) + " (" + dims + ")";
  }
};

// The ndarray map at `key`, checked for consistency: a known dtype, non-negative dims whose
// product times the item size is exactly the data's length (no overflow on the way).
NdArray ndarray_of(const msgpack::object& o, const std::string& key) {
  const msgpack::object* data = find(o, "data");
  const msgpack::object* dtype = find(o, "dtype");
  const msgpack::object* shape = find(o, "shape");
  if (!data || !dtype || !shape || data->type != msgpack::type::BIN || !is_text(*dtype) ||
      shape->type != msgpack::type::ARRAY)
    throw RequestError(key + ": malformed numpy array (openpi msgpack_numpy needs bin 'data', str 'dtype' and a "
                             "'shape' list)");
  NdArray a;
  const auto parsed = parse_dtype(bytes_of(*dtype));
  if (!parsed) throw RequestError(key + ": unknown numpy dtype '" + std::string(bytes_of(*dtype)) + "'");
  a.dtype = *parsed;
  if (shape->via.array.size > 8) throw RequestError(key + ": an array of " + std::to_string(shape->via.array.size) + " dimensions");
  int64_t count = 1;
  for (uint32_t i = 0; i < shape->via.array.size; ++i) {
    const msgpack::object& dim = shape->via.array.ptr[i];
    if (dim.type != msgpack::type::POSITIVE_INTEGER || dim.via.u64 > (uint64_t{1} << 31))
      throw RequestError(key + ": shape entry " + std::to_string(i) + " is not a dimension (0 .. 2^31)");
    a.shape.push_back(static_cast<int64_t>(dim.via.u64));
    count *= a.shape.back();
    if (count > (int64_t{1} << 40)) throw RequestError(key + ": shape too large");
  }
  a.data = bytes_of(*data);
  if (static_cast<uint64_t>(count) * static_cast<uint64_t>(a.dtype.itemsize) != a.data.size())
    throw RequestError(key + ": " + a.describe() + " needs " + std::to_string(count * a.dtype.itemsize) +
                       " bytes of data, the array holds " + std::to_string(a.data.size()));
  return a;
}

bool is_ndarray(const msgpack::object& o) { return o.type == msgpack::type::MAP && find(o, "__ndarray__"); }

const msgpack::object& required(const msgpack::object& root, const std::string& key, const std::string& what) {
  const msgpack::object* value = lookup(root, key);
  if (!value) throw RequestError(key + ": missing (" + what + ")");
  return *value;
}

torch::Tensor decode_image(const msgpack::object& o, const std::string& key, int64_t max_side) {
  const std::string expected = key + ": expected a uint8 (H, W, 3) image";
  if (!is_ndarray(o)) throw RequestError(expected + ", got " + type_name(o));
  const NdArray a = ndarray_of(o, key);
  if (a.dtype.kind != 'u' || a.dtype.itemsize != 1 || a.shape.size() != 3 || a.shape[2] != 3)
    throw RequestError(expected + ", got " + a.describe());
  if (a.shape[0] < 1 || a.shape[1] < 1 || a.shape[0] > max_side || a.shape[1] > max_side)
    throw RequestError(key + ": image of " + std::to_string(a.shape[0]) + " x " + std::to_string(a.shape[1]) +
                       " pixels (accepted: 1 .. " + std::to_string(max_side) + " per side)");
  torch::Tensor image = torch::empty({a.shape[0], a.shape[1], 3}, torch::kUInt8);
  std::memcpy(image.data_ptr(), a.data.data(), a.data.size());
  return image;
}

// One state value of a numpy array (little-endian or native; numpy writes native = little here).
double element(const NdArray& a, size_t i) {
  const char* p = a.data.data() + i * static_cast<size_t>(a.dtype.itemsize);
  auto read = [p](auto value) {
    std::memcpy(&value, p, sizeof(value));
    return static_cast<double>(value);
  };
  switch (a.dtype.kind) {
    case 'f': return a.dtype.itemsize == 4 ? read(float{}) : read(double{});
    case 'i': return a.dtype.itemsize == 4 ? read(int32_t{}) : read(int64_t{});
  }
  return std::nan("");
}

std::vector<double> decode_state(const msgpack::object& o, const std::string& key, int64_t dim) {
  const std::string expected = key + ": expected " + std::to_string(dim) + " numbers (a float32 / float64 array)";
  std::vector<double> state;
  if (is_ndarray(o)) {
    const NdArray a = ndarray_of(o, key);
    const bool numeric = (a.dtype.kind == 'f' && (a.dtype.itemsize == 4 || a.dtype.itemsize == 8)) ||
                         (a.dtype.kind == 'i' && (a.dtype.itemsize == 4 || a.dtype.itemsize == 8));
    if (!numeric || a.dtype.big_endian || a.shape.size() != 1 || a.shape[0] != dim)
      throw RequestError(expected + ", got " + a.describe());
    for (int64_t i = 0; i < dim; ++i) state.push_back(element(a, static_cast<size_t>(i)));
  } else if (o.type == msgpack::type::ARRAY) {  // a plain list of numbers
    if (o.via.array.size != dim) throw RequestError(expected + ", got a list of " + std::to_string(o.via.array.size));
    for (uint32_t i = 0; i < o.via.array.size; ++i) {
      const msgpack::object& v = o.via.array.ptr[i];
      if (v.type == msgpack::type::FLOAT32 || v.type == msgpack::type::FLOAT64)
        state.push_back(v.via.f64);
      else if (v.type == msgpack::type::POSITIVE_INTEGER)
        state.push_back(static_cast<double>(v.via.u64));
      else if (v.type == msgpack::type::NEGATIVE_INTEGER)
        state.push_back(static_cast<double>(v.via.i64));
      else
        throw RequestError(key + "[" + std::to_string(i) + "]: expected a number, got " + type_name(v));
    }
  } else {
    throw RequestError(expected + ", got " + type_name(o));
  }
  for (size_t i = 0; i < state.size(); ++i)
    if (!std::isfinite(state[i]))
      throw RequestError(key + "[" + std::to_string(i) + "]: " + (std::isnan(state[i]) ? "NaN" : "infinite") +
                         " (the state must be finite)");
  return state;
}

std::string decode_prompt(const msgpack::object& o, const std::string& key, size_t max_bytes) {
  // A numpy str_ scalar arrives as {b"__npgeneric__": true, b"data": "..."}.
  const msgpack::object* value = &o;
  if (o.type == msgpack::type::MAP && find(o, "__npgeneric__")) value = find(o, "data");
  if (!value || value->type != msgpack::type::STR)
    throw RequestError(key + ": expected the instruction as a string, got " + type_name(value ? *value : o));
  const auto bytes = bytes_of(*value);
  if (bytes.size() > max_bytes)
    throw RequestError(key + ": instruction of " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                       std::to_string(max_bytes) + " (focusvla serve --max-prompt-bytes)");
  std::string text(bytes);
  if (const size_t bad = invalid_utf8_offset(text); bad != std::string::npos)
    throw RequestError(key + ": the instruction is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw RequestError(key + ": empty instruction");
  return text;
}

// msgpack keys as openpi's packer writes them: str for user keys, bin for the ndarray markers.
template <typename Packer>
void pack_str(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

template <typename Packer>
void pack_bin(Packer& pk, std::string_view s) {
  pk.pack_bin(static_cast<uint32_t>(s.size()));
  pk.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
}

// A float64 as Python's msgpack writes every float (0xcb + 8 big-endian bytes). msgpack-cxx's
// pack_double writes integral values as integers (1.0 -> 1), which would make a client's
// float field an int now and then.
void pack_float64(msgpack::sbuffer& out, double value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  char bytes[9];
  bytes[0] = static_cast<char>(0xcb);
  for (int i = 0; i < 8; ++i) bytes[1 + i] = static_cast<char>((bits >> (56 - 8 * i)) & 0xff);
  out.write(bytes, sizeof(bytes));
}

template <typename Packer>
void pack_json(msgpack::sbuffer& out, Packer& pk, const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null: pk.pack_nil(); break;
    case nlohmann::json::value_t::boolean: v.get<bool>() ? pk.pack_true() : pk.pack_false(); break;
    case nlohmann::json::value_t::number_integer: pk.pack_int64(v.get<int64_t>()); break;
    case nlohmann::json::value_t::number_unsigned: pk.pack_uint64(v.get<uint64_t>()); break;
    case nlohmann::json::value_t::number_float: pack_float64(out, v.get<double>()); break;
    case nlohmann::json::value_t::string: pack_str(pk, v.get_ref<const std::string&>()); break;
    case nlohmann::json::value_t::array:
      pk.pack_array(static_cast<uint32_t>(v.size()));
      for (const auto& item : v) pack_json(out, pk, item);
      break;
    case nlohmann::json::value_t::object:
      pk.pack_map(static_cast<uint32_t>(v.size()));
      for (const auto& [key, item] : v.items()) {
        pack_str(pk, key);
        pack_json(out, pk, item);
      }
      break;
    default: throw Error("encode_json: a JSON value of an unsupported type (binary / discarded)");
  }
}

}  // namespace

ObservationKeys default_observation_keys(int64_t cameras) {
  static const std::vector<std::string> libero = {"observation/image", "observation/wrist_image"};
  if (cameras < 1 || cameras > static_cast<int64_t>(libero.size()))
    throw Error("serve: a policy with " + std::to_string(cameras) +
                " cameras has no default image keys; name one key per camera (--image-key)");
  ObservationKeys keys;
  keys.images.assign(libero.begin(), libero.begin() + cameras);
  return keys;
}

Observation decode_observation(const char* data, size_t size, const RequestSpec& spec) {
  msgpack::object_handle handle;
  size_t offset = 0;
  try {
    handle = msgpack::unpack(data, size, offset, reference_frame, nullptr, request_limits(size));
  } catch (const msgpack::insufficient_bytes&) {
    throw RequestError("request: truncated msgpack (" + std::to_string(size) + " bytes)");
  } catch (const msgpack::size_overflow& e) {
    throw RequestError(std::string("request: msgpack over the request limits (") + e.what() + ")");
  } catch (const std::exception& e) {
    throw RequestError(std::string("request: invalid msgpack (") + e.what() + ")");
  }
  if (offset != size)
    throw RequestError("request: " + std::to_string(size - offset) + " bytes after the msgpack value");
  const msgpack::object& root = handle.get();
  if (root.type != msgpack::type::MAP || is_ndarray(root))
    throw RequestError("request: expected a map of observation keys, got " + type_name(root));

  Observation obs;
  for (const std::string& key : spec.keys.images)
    obs.images.push_back(decode_image(required(root, key, "a camera image"), key, spec.max_image_side));
  if (spec.proprio_dim > 0)
    obs.proprio = decode_state(required(root, spec.keys.state, "the robot state"), spec.keys.state, spec.proprio_dim);
  obs.instruction = decode_prompt(required(root, spec.keys.prompt, "the instruction"), spec.keys.prompt, spec.max_prompt_bytes);
  return obs;
}

std::string encode_reply(const ActionChunk::Matrix& actions,
                         const std::vector<std::pair<std::string, double>>& server_timing) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> pk(&buffer);
  pk.pack_map(2);
  pack_str(pk, "actions");
  pk.pack_map(4);
  pack_bin(pk, "__ndarray__");
  pk.pack_true();
  pack_bin(pk, "data");
  // Row-major doubles, little-endian as numpy's '<f8' (every platform we build for).
  pack_bin(pk, std::string_view(reinterpret_cast<const char*>(actions.data()),
                                static_cast<size_t>(actions.size()) * sizeof(double)));
  pack_bin(pk, "dtype");
  pack_str(pk, "<f8");
  pack_bin(pk, "shape");
  pk.pack_array(2);
  pk.pack_int64(actions.rows());
  pk.pack_int64(actions.cols());
  pack_str(pk, "server_timing");
  pk.pack_map(static_cast<uint32_t>(server_timing.size()));
  for (const auto& [name, value] : server_timing) {
    pack_str(pk, name);
    pack_float64(buffer, value);
  }
  return std::string(buffer.data(), buffer.size());
}

std::string encode_json(const nlohmann::json& value) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> pk(&buffer);
  pack_json(buffer, pk, value);
  return std::string(buffer.data(), buffer.size());
}

}  // namespace focusvla::serve
