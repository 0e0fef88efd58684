// safetensors reader: files written by pip `safetensors` read back byte for byte, and every kind
// of malformed file rejected with a message naming the file and the problem. Torch-free: this
// file also runs in the AddressSanitizer build.

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/safetensors.h"
#include "test_util.h"

namespace focusvla {
namespace {

using io::SafetensorsFile;
using testing::data_path;
using testing::expect_error;
using testing::scratch_dir;

std::string read_bytes(const std::string& path) { return io::read_text_file(path); }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A file with an arbitrary header and data section: only for malformed inputs; valid files in
// these tests come from the reference writer.
std::string craft(const std::string& dir, const std::string& name, const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  bytes += header;
  bytes += std::string(data_bytes, '\x01');
  const std::string path = dir + "/" + name;
  write_bytes(path, bytes);
  return path;
}

TEST(SafetensorsRead, EveryDtypeMatchesTheWriterByteForByte) {
  const auto file = SafetensorsFile::open(data_path("io", "dtypes.safetensors"));
  const auto manifest = io::read_json_file(data_path("io", "dtypes/manifest.json"));
  ASSERT_EQ(file.tensors().size(), manifest.size());
  for (const auto& [name, entry] : manifest.items()) {
    SCOPED_TRACE(name);
    const io::TensorInfo* info = file.find(name);
    ASSERT_NE(info, nullptr);
    EXPECT_STREQ(io::dtype_name(info->dtype), entry["dtype"].get<std::string>().c_str());
    EXPECT_EQ(info->shape, entry["shape"].get<std::vector<int64_t>>());
    const std::string expected = read_bytes(data_path("io", "dtypes/" + entry["file"].get<std::string>()));
    ASSERT_EQ(info->nbytes(), expected.size());
    EXPECT_EQ(0, std::memcmp(file.data(*info), expected.data(), expected.size()));
  }
  EXPECT_EQ(file.metadata().at("note"), "focusvla");
  EXPECT_EQ(file.find("absent"), nullptr);
}

TEST(SafetensorsRead, ShardIndexListsEveryTensor) {
  const auto index = io::SafetensorsIndex::load(data_path("io", "sharded/model.safetensors.index.json"));
  EXPECT_EQ(index.weight_map.size(), 7u);
  EXPECT_EQ(index.weight_map.at("block.0.weight"), "model-00001-of-00003.safetensors");
  EXPECT_EQ(index.metadata.at("total_size"), "336");
}

TEST(SafetensorsRead, DtypeNamesRoundTrip) {
  for (const char* name : {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL",
                           "F8_E4M3", "F8_E5M2"})
    EXPECT_STREQ(io::dtype_name(io::parse_dtype(name)), name);
  expect_error([] { io::parse_dtype("F33"); }, {"unknown dtype 'F33'"});
}

TEST(SafetensorsErrors, MissingFile) {
  expect_error([] { SafetensorsFile::open("/nonexistent/model.safetensors"); }, {"/nonexistent/model.safetensors", "cannot open"});
}

TEST(SafetensorsErrors, DirectoryInsteadOfFile) {
  const auto dir = scratch_dir("st_dir");
  expect_error([&] { SafetensorsFile::open(dir); }, {dir, "not a regular file"});
}

TEST(SafetensorsErrors, FileShorterThanHeaderLength) {
  const auto dir = scratch_dir("st_short");
  write_bytes(dir + "/a.safetensors", "abc");
  expect_error([&] { SafetensorsFile::open(dir + "/a.safetensors"); }, {"a.safetensors", "3 bytes, too short"});
  write_bytes(dir + "/empty.safetensors", "");
  expect_error([&] { SafetensorsFile::open(dir + "/empty.safetensors"); }, {"empty.safetensors", "0 bytes"});
}

TEST(SafetensorsErrors, HeaderLengthPastEndOfFile) {
  const auto dir = scratch_dir("st_hlen");
  std::string bytes = read_bytes(data_path("io", "dtypes.safetensors"));
  bytes[5] = '\x10';  // a header length of about 17 TB
  write_bytes(dir + "/a.safetensors", bytes);
  expect_error([&] { SafetensorsFile::open(dir + "/a.safetensors"); }, {"a.safetensors", "runs past the end"});
}

TEST(SafetensorsErrors, TruncatedData) {
  const auto dir = scratch_dir("st_trunc");
  std::string bytes = read_bytes(data_path("io", "dtypes.safetensors"));
  bytes.resize(bytes.size() - 5);
  write_bytes(dir + "/a.safetensors", bytes);
  expect_error([&] { SafetensorsFile::open(dir + "/a.safetensors"); }, {"a.safetensors", "outside the", "data section"});
}

TEST(SafetensorsErrors, TruncatedHeader) {
  const auto dir = scratch_dir("st_trunc_header");
  std::string bytes = read_bytes(data_path("io", "dtypes.safetensors"));
  bytes.resize(40);
  write_bytes(dir + "/a.safetensors", bytes);
  expect_error([&] { SafetensorsFile::open(dir + "/a.safetensors"); }, {"a.safetensors", "runs past the end"});
}

TEST(SafetensorsErrors, InvalidJson) {
  const auto dir = scratch_dir("st_json");
  const auto path = craft(dir, "a.safetensors", "{\"a\": {\"dtype\": ", 0);
  expect_error([&] { SafetensorsFile::open(path); }, {"a.safetensors", "invalid JSON"});
}

TEST(SafetensorsErrors, HeaderNotAnObject) {
  const auto dir = scratch_dir("st_array");
  const auto path = craft(dir, "a.safetensors", "[1, 2]", 0);
  expect_error([&] { SafetensorsFile::open(path); }, {"a.safetensors", "not a JSON object"});
}

TEST(SafetensorsErrors, UnknownDtype) {
  const auto dir = scratch_dir("st_dtype");
  const auto path = craft(dir, "a.safetensors", R"({"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}})", 8);
  expect_error([&] { SafetensorsFile::open(path); }, {"a.safetensors", "'w'", "unknown dtype 'F33'"});
}

TEST(SafetensorsErrors, ShapeDisagreesWithOffsets) {
  const auto dir = scratch_dir("st_shape");
  const auto path = craft(dir, "a.safetensors", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  expect_error([&] { SafetensorsFile::open(path); }, {"'w'", "needs 12 bytes", "hold 8"});
}

TEST(SafetensorsErrors, OffsetsOutsideData) {
  const auto dir = scratch_dir("st_range");
  const auto path = craft(dir, "a.safetensors", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [4, 20]}})", 8);
  expect_error([&] { SafetensorsFile::open(path); }, {"'w'", "[4, 20)", "outside the 8-byte data section"});
}

TEST(SafetensorsErrors, OffsetsOverlapAnotherTensor) {
  const auto dir = scratch_dir("st_overlap");
  const auto path = craft(dir, "a.safetensors",
                          R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                          12);
  expect_error([&] { SafetensorsFile::open(path); }, {"'b'", "overlap tensor 'a'"});
}

TEST(SafetensorsErrors, OffsetsReversed) {
  const auto dir = scratch_dir("st_reversed");
  const auto path = craft(dir, "a.safetensors", R"({"w": {"dtype": "U8", "shape": [0], "data_offsets": [8, 4]}})", 8);
  expect_error([&] { SafetensorsFile::open(path); }, {"'w'", "end before they begin"});
}

TEST(SafetensorsErrors, MalformedFields) {
  const auto dir = scratch_dir("st_fields");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "not a non-negative integer"},
      {R"({"w": {"dtype": "F32", "shape": "4", "data_offsets": [0, 4]}})", "shape is not an array"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "data_offsets must be two"},
      {R"({"w": {"dtype": "F32", "shape": [1]}})", "missing field 'data_offsets'"},
      {R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "missing string field 'dtype'"},
      {R"({"w": 5})", "entry is not a JSON object"},
      {R"({"__metadata__": {"k": 1}})", "__metadata__['k'] is not a string"},
      {R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 4]}})", "overflows"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].first);
    const auto path = craft(dir, "c" + std::to_string(i) + ".safetensors", cases[i].first, 4);
    expect_error([&] { SafetensorsFile::open(path); }, {"c" + std::to_string(i) + ".safetensors", cases[i].second});
  }
}

// Shape entries must fit int64: 2^63 and above used to wrap to negative dimensions.
TEST(SafetensorsErrors, ShapeEntryBeyondInt64) {
  const auto dir = scratch_dir("st_shape_int64");
  for (const char* entry : {"9223372036854775808", "18446744073709551615"}) {
    SCOPED_TRACE(entry);
    const auto path = craft(dir, "big.safetensors",
                            std::string(R"({"w": {"dtype": "U8", "shape": [)") + entry + R"(, 0], "data_offsets": [0, 0]}})", 0);
    expect_error([&] { SafetensorsFile::open(path); },
                 {"big.safetensors", "tensor 'w'", std::string("shape entry ") + entry, "exceeds int64"});
  }
}

// A zero in the shape makes numel 0 even when the entries before it multiply past int64 (but
// not past the 64-bit byte count, which is refused as LibTorch refuses it); without a zero,
// numel is computed with overflow checks.
TEST(SafetensorsRead, NumelWithAZeroNeverOverflows) {
  const auto dir = scratch_dir("st_numel");
  const auto path = craft(dir, "empty.safetensors",
                          R"({"u8": {"dtype": "U8", "shape": [4294967296, 2147483649, 0], "data_offsets": [0, 0]},
                              "lead": {"dtype": "F64", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}})",
                          0);
  const auto file = SafetensorsFile::open(path);
  for (const char* name : {"u8", "lead"}) {
    SCOPED_TRACE(name);
    ASSERT_NE(file.find(name), nullptr);
    EXPECT_EQ(file.find(name)->numel(), 0);
    EXPECT_EQ(file.find(name)->nbytes(), 0u);
  }
  const auto f64 = craft(dir, "f64.safetensors",
                         R"({"w": {"dtype": "F64", "shape": [4294967296, 2147483649, 0], "data_offsets": [0, 0]}})", 0);
  expect_error([&] { SafetensorsFile::open(f64); },
               {"f64.safetensors", "tensor 'w'", "shape [4294967296, 2147483649, 0] overflows 64-bit byte count"});
  io::TensorInfo huge;
  huge.name = "huge";
  huge.shape = {int64_t{1} << 62, 4};
  expect_error([&] { huge.numel(); }, {"tensor 'huge'", "overflows int64"});
  huge.shape = {int64_t{1} << 31, int64_t{1} << 31, 1};
  EXPECT_EQ(huge.numel(), int64_t{1} << 62);
}

// A number beyond double range (1e500) in a header or an index is a named JSON error (nlohmann
// throws out_of_range for it, not parse_error); so is absurd nesting.
TEST(SafetensorsErrors, NumberBeyondDoubleRangeIsNamed) {
  const auto dir = scratch_dir("st_1e500");
  const auto path = craft(dir, "num.safetensors", R"({"w": {"dtype": "F32", "shape": [1e500], "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(path); }, {"num.safetensors", "invalid JSON", "1e500"});
  write_bytes(dir + "/model.safetensors.index.json", R"({"metadata": {"total_size": -1e500}, "weight_map": {}})");
  expect_error([&] { io::SafetensorsIndex::load(dir + "/model.safetensors.index.json"); },
               {"model.safetensors.index.json", "invalid JSON", "1e500"});
}

TEST(SafetensorsErrors, DeeplyNestedHeaderIsRefused) {
  const auto dir = scratch_dir("st_deep");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const auto path = craft(dir, "deep.safetensors", R"({"w": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 4]}})", 4);
  expect_error([&] { SafetensorsFile::open(path); }, {"deep.safetensors", "nested deeper than"});
}

TEST(SafetensorsErrors, IndexProblemsAreNamed) {
  const auto dir = scratch_dir("st_index");
  write_bytes(dir + "/bad.json", "{");
  expect_error([&] { io::SafetensorsIndex::load(dir + "/bad.json"); }, {"bad.json", "invalid JSON"});
  write_bytes(dir + "/nomap.json", "{\"metadata\": {}}");
  expect_error([&] { io::SafetensorsIndex::load(dir + "/nomap.json"); }, {"nomap.json", "weight_map"});
  write_bytes(dir + "/escape.json", "{\"weight_map\": {\"a\": \"../../etc/passwd\"}}");
  expect_error([&] { io::SafetensorsIndex::load(dir + "/escape.json"); }, {"escape.json", "not a plain file name"});
}

// Random corruption of a real header: every mutant either parses or throws Error; none crashes
// or reads outside the file (the ASan build checks the latter).
TEST(SafetensorsErrors, MutatedHeadersNeverCrash) {
  const auto dir = scratch_dir("st_fuzz");
  const std::string original = read_bytes(data_path("io", "dtypes.safetensors"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(original[i]);
  std::mt19937 rng(7);
  int rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = rng() % (8 + header_len);
      bytes[pos] = static_cast<char>(rng() % 256);
    }
    if (trial % 5 == 0) bytes.resize(rng() % bytes.size());
    const std::string path = dir + "/m.safetensors";
    write_bytes(path, bytes);
    try {
      const auto file = SafetensorsFile::open(path);
      for (const auto& t : file.tensors()) ASSERT_LE(file.data_offset() + t.end, bytes.size());
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);
}

}  // namespace
}  // namespace focusvla
