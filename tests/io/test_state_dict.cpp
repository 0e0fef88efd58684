// StateDict: safetensors (single and sharded) and torch.save files written by the reference
// writers read back exactly; module loading reports every problem by name and never leaves a
// module half loaded.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/mapped_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/io/torch_pickle.h"
#include "focusvla/nn/layers.h"
#include "test_util.h"

namespace focusvla {
namespace {

namespace fs = std::filesystem;
using io::StateDict;
using testing::data_path;
using testing::expect_error;
using testing::scratch_dir;

// Compares every tensor named in <group>/<expected>/manifest.json with the raw bytes there.
void expect_matches_manifest(const StateDict& state, const std::string& expected_dir) {
  const auto manifest = io::read_json_file(data_path("io", expected_dir + "/manifest.json"));
  ASSERT_EQ(state.size(), manifest.size());
  for (const auto& [name, entry] : manifest.items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(state.contains(name));
    const torch::Tensor t = state.at(name).contiguous();
    EXPECT_EQ(t.sizes().vec(), entry["shape"].get<std::vector<int64_t>>());
    const std::string expected = io::read_text_file(data_path("io", expected_dir + "/" + entry["file"].get<std::string>()));
    ASSERT_EQ(static_cast<size_t>(t.nbytes()), expected.size());
    if (!expected.empty()) EXPECT_EQ(0, std::memcmp(t.data_ptr(), expected.data(), expected.size()));
  }
}

void copy_file(const std::string& from, const std::string& to) { fs::copy_file(from, to, fs::copy_options::overwrite_existing); }

TEST(StateDictSafetensors, EveryDtypeExactAndZeroCopy) {
  const auto state = StateDict::from_safetensors(data_path("io", "dtypes.safetensors"));
  expect_matches_manifest(state, "dtypes");
  EXPECT_EQ(state.at("layer.3.bf16").scalar_type(), torch::kBFloat16);
  EXPECT_EQ(state.at("layer.9.bool").scalar_type(), torch::kBool);
  EXPECT_EQ(state.at("layer.13.f8_e4m3").scalar_type(), torch::kFloat8_e4m3fn);
  EXPECT_EQ(state.at("scalar").dim(), 0);
  EXPECT_EQ(state.at("scalar").item<float>(), 2.5f);
  EXPECT_EQ(state.at("empty").numel(), 0);
  EXPECT_TRUE(state.is_mapped("layer.1.f32"));
  EXPECT_EQ(state.source("layer.1.f32"), data_path("io", "dtypes.safetensors"));
}

TEST(StateDictSafetensors, TensorsOutliveTheStateDict) {
  torch::Tensor kept;
  {
    const auto state = StateDict::from_safetensors(data_path("io", "dtypes.safetensors"));
    kept = state.at("layer.1.f32");
  }
  const std::string expected = io::read_text_file(data_path("io", "dtypes/t1.bin"));
  ASSERT_EQ(static_cast<size_t>(kept.nbytes()), expected.size());
  EXPECT_EQ(0, std::memcmp(kept.data_ptr(), expected.data(), expected.size()));
}

TEST(StateDictSafetensors, WritesStayPrivateAndReleaseRereadsTheFile) {
  const auto state = StateDict::from_safetensors(data_path("io", "dtypes.safetensors"));
  const torch::Tensor original = state.at("layer.1.f32").clone();
  state.at("layer.1.f32").fill_(7.0f);  // copy-on-write: the file is untouched
  const auto again = StateDict::from_safetensors(data_path("io", "dtypes.safetensors"));
  EXPECT_TRUE(torch::equal(again.at("layer.1.f32"), original));
  again.release_pages("layer.1.f32");
  EXPECT_TRUE(torch::equal(again.at("layer.1.f32"), original));
}

TEST(StateDictSafetensors, ShardedThroughTheIndex) {
  const auto state = StateDict::from_safetensors(data_path("io", "sharded/model.safetensors.index.json"));
  expect_matches_manifest(state, "sharded_expected");
  EXPECT_NE(state.source("block.0.weight"), state.source("block.6.weight"));
}

TEST(StateDictSafetensors, MissingShardIsNamedBeforeAnythingIsRead) {
  const auto dir = scratch_dir("missing_shard");
  const auto src = data_path("io", "sharded");
  copy_file(src + "/model.safetensors.index.json", dir + "/model.safetensors.index.json");
  copy_file(src + "/model-00001-of-00003.safetensors", dir + "/model-00001-of-00003.safetensors");
  copy_file(src + "/model-00003-of-00003.safetensors", dir + "/model-00003-of-00003.safetensors");
  expect_error([&] { StateDict::from_safetensors(dir + "/model.safetensors.index.json"); },
               {"model.safetensors.index.json", "shard 'model-00002-of-00003.safetensors'", "missing"});
}

TEST(StateDictSafetensors, IndexEntryAbsentFromItsShard) {
  const auto dir = scratch_dir("index_mismatch");
  const auto src = data_path("io", "sharded");
  for (const auto& e : fs::directory_iterator(src)) copy_file(e.path().string(), dir + "/" + e.path().filename().string());
  auto index = io::read_json_file(dir + "/model.safetensors.index.json");
  index["weight_map"]["block.0.weight"] = "model-00002-of-00003.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  expect_error([&] { StateDict::from_safetensors(dir + "/model.safetensors.index.json"); },
               {"tensor 'block.0.weight'", "shard 'model-00002-of-00003.safetensors'", "does not hold it"});
}

// An empty safetensors tensor (a zero in its shape) whose other entries multiply past int64 but
// not past 64 bits: accepted, and LibTorch makes it.
TEST(StateDictSafetensors, EmptyTensorWithHugeEntriesLoads) {
  const auto dir = scratch_dir("st_empty_shapes");
  const std::string header = R"({"w": {"dtype": "U8", "shape": [4294967296, 2147483649, 0], "data_offsets": [0, 0]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  std::ofstream(dir + "/ok.safetensors", std::ios::binary) << bytes << header;
  const auto state = StateDict::from_safetensors(dir + "/ok.safetensors");
  EXPECT_EQ(state.at("w").numel(), 0);
  EXPECT_EQ(state.at("w").sizes().vec(), (std::vector<int64_t>{4294967296, 2147483649, 0}));
}

TEST(TorchFile, StateDictWithModulePrefixExact) {
  const auto state = StateDict::from_torch_file(data_path("io", "state_dict.pt"));
  expect_matches_manifest(state, "state_dict_expected");
  EXPECT_FALSE(state.contains("module.model.fc1.weight"));
  EXPECT_EQ(state.at("model.fc1.bias").scalar_type(), torch::kBFloat16);
  EXPECT_EQ(state.at("model.count").scalar_type(), torch::kInt64);
  // torch.save stores its records uncompressed: contiguous tensors view the mapped file.
  EXPECT_TRUE(state.is_mapped("model.fc1.weight"));
  EXPECT_TRUE(state.is_mapped("model.fc1.bias"));
  EXPECT_FALSE(state.is_mapped("model.view"));  // a transposed view: not one span of the file
}

// Dropping a mapped tensor's pages after a load: a later read faults them back from the file.
TEST(TorchFile, ReleasedPagesReadBackTheSameValues) {
  const auto state = StateDict::from_torch_file(data_path("io", "state_dict.pt"));
  const torch::Tensor before = state.at("model.fc1.weight").clone();
  for (const auto& name : state.keys()) state.release_pages(name);
  EXPECT_TRUE(torch::equal(state.at("model.fc1.weight"), before));
  expect_matches_manifest(state, "state_dict_expected");
}

// Deflated records (not what torch.save writes, but a valid archive): copied through LibTorch's
// reader, the same values, nothing mapped.
TEST(TorchFile, DeflatedRecordsAreCopied) {
  const auto state = StateDict::from_torch_file(data_path("io", "state_dict_deflated.pt"));
  expect_matches_manifest(state, "state_dict_expected");
  for (const auto& name : state.keys()) EXPECT_FALSE(state.is_mapped(name)) << name;
}

TEST(TorchFile, ModuleStateDictWithMetadata) {
  const auto state = StateDict::from_torch_file(data_path("io", "linear.pt"));
  expect_matches_manifest(state, "linear_expected");
}

TEST(TorchFile, NotAStateDict) {
  expect_error([] { StateDict::from_torch_file(data_path("io", "list.pt")); }, {"list.pt", "not a state dict"});
  expect_error([] { StateDict::from_torch_file(data_path("io", "mixed.pt")); },
               {"mixed.pt", "not a state dict", "entry 'step'", "not a tensor"});
  expect_error([] { StateDict::from_torch_file(data_path("io", "legacy.pt")); }, {"legacy.pt", "not a torch.save zip"});
  expect_error([] { StateDict::from_torch_file(data_path("io", "dtypes.safetensors")); }, {"dtypes.safetensors", "not a torch.save zip"});
  expect_error([] { StateDict::from_torch_file("/nonexistent/head.pt"); }, {"/nonexistent/head.pt", "no such file"});
}

TEST(TorchFile, TruncatedArchive) {
  const auto dir = scratch_dir("truncated_pt");
  std::string bytes = io::read_text_file(data_path("io", "state_dict.pt"));
  for (size_t keep : {bytes.size() / 2, bytes.size() - 30, size_t{10}}) {
    std::ofstream(dir + "/cut.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(keep));
    SCOPED_TRACE(keep);
    expect_error([&] { StateDict::from_torch_file(dir + "/cut.pt"); }, {"cut.pt"});
  }
}

std::string malformed(const std::string& name) { return data_path("io", "malformed_pt/" + name); }

// Pickles nesting 200,000 values through each container opcode: refused at a bounded depth (the
// values were freed recursively, which overflowed the stack).
TEST(TorchFile, DeepNestingIsRefusedWithTheDepth) {
  for (const char* name : {"deep_tuple1.pt", "deep_mark_tuple.pt", "deep_list.pt", "deep_dict.pt"}) {
    SCOPED_TRACE(name);
    expect_error([&] { StateDict::from_torch_file(malformed(name)); }, {name, "nested deeper than 100 levels"});
  }
}

// Nesting built outer-first (a list fetched back from the memo and filled after it was stored in
// another list) is refused too: depth could not be tracked, and it is how cycles are made.
TEST(TorchFile, ContainerFilledAfterBeingStoredIsRefused) {
  expect_error([] { StateDict::from_torch_file(malformed("deep_memo_list.pt")); },
               {"deep_memo_list.pt", "APPEND to a list already inside another value"});
}

// Self-referencing pickles (a list appended to itself, a dict holding itself, two lists holding
// each other) are refused, and every value of the failed load is freed: no shared_ptr cycle.
TEST(TorchFile, SelfReferenceIsRefusedAndLeaksNothing) {
  const int64_t before = io::detail::live_pickle_values();
  for (const char* name : {"self_list.pt", "self_dict.pt", "cycle_lists.pt", "cycle_in_state_dict.pt"}) {
    SCOPED_TRACE(name);
    expect_error([&] { StateDict::from_torch_file(malformed(name)); }, {name, "cyclic pickle"});
    EXPECT_EQ(io::detail::live_pickle_values(), before) << "values of " << name << " outlived the load";
  }
  // A clean load frees its values too (the tensors own their storage, not the values).
  const auto state = StateDict::from_torch_file(data_path("io", "state_dict.pt"));
  EXPECT_EQ(state.size(), 4u);
  EXPECT_EQ(io::detail::live_pickle_values(), before);
}

// Tensor views whose size, stride or offset arithmetic overflows int64 are refused by key before
// LibTorch sees them; a valid view reads back exactly.
TEST(TorchFile, TensorViewArithmeticIsChecked) {
  expect_matches_manifest(StateDict::from_torch_file(malformed("view_ok.pt")), "malformed_pt/view_ok_expected");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"numel_overflow.pt", "size [4611686018427387904, 4] overflows the int64 element count"},
      {"bytes_overflow.pt", "size [2305843009213693952] of Float overflows the int64 byte count"},
      {"stride_overflow.pt", "overflows int64"},
      {"offset_overflow.pt", "overflows int64"},
      {"zero_overflow.pt", "size [1099511627776, 1099511627776, 0]"},
  };
  for (const auto& [name, problem] : cases) {
    SCOPED_TRACE(name);
    expect_error([&] { StateDict::from_torch_file(malformed(name)); }, {name, "tensor 'weight'", problem});
  }
}

// The archive's `version` record is parsed here, with checked parsing, before LibTorch's reader
// sees it: that reader let std::out_of_range ("stoull") escape for a 23-digit number, and leaks
// its zip state whenever its constructor throws (as for the layout errors below).
TEST(TorchFile, VersionRecordIsCheckedAsANumber) {
  EXPECT_TRUE(StateDict::from_torch_file(malformed("version_empty_ok.pt")).empty());  // " +3 trailing" reads as 3
  expect_error([] { StateDict::from_torch_file(malformed("version_23_digits.pt")); },
               {"version_23_digits.pt", "version record '12345678901234567890123'", "out of range"});
  expect_error([] { StateDict::from_torch_file(malformed("version_text.pt")); },
               {"version_text.pt", "version record 'three'", "is not a number"});
  expect_error([] { StateDict::from_torch_file(malformed("version_unsupported.pt")); },
               {"version_unsupported.pt", "version record '11'", "not a format version this LibTorch reads"});
}

// The record is found in archives torch.save wrote, also through their zip64 end record (the
// plain one forced to its markers, as for > 65535 records or > 4 GiB).
TEST(TorchFile, VersionRecordIsFoundInTorchSaveArchives) {
  const auto state = StateDict::from_torch_file(malformed("torch_save_zip64.pt"));
  EXPECT_TRUE(torch::equal(state.at("weight"), torch::arange(6, torch::kFloat32)));
  for (const char* name : {"torch_save_version_0.pt", "torch_save_zip64_version_0.pt"}) {
    SCOPED_TRACE(name);
    expect_error([&] { StateDict::from_torch_file(malformed(name)); },
                 {name, "version record '0'", "not a format version this LibTorch reads"});
  }
}

TEST(TorchFile, ArchiveLayoutErrorsAreNamed) {
  expect_error([] { StateDict::from_torch_file(malformed("no_version.pt")); }, {"no_version.pt", "no version record"});
  expect_error([] { StateDict::from_torch_file(malformed("no_folder.pt")); },
               {"no_folder.pt", "first record 'data.pkl' is not in a folder"});
}

// A module in the shape of a policy head fragment, named like a checkpoint.
struct TinyImpl : torch::nn::Module {
  TinyImpl() {
    fc1 = register_module("fc1", nn::Linear(3, 5, true, torch::kFloat32));
    norm = register_module("norm", nn::LayerNorm(5, 1e-6, torch::kFloat32));
    scale = register_buffer("scale", torch::empty({2}, torch::kInt64));
  }
  nn::Linear fc1{nullptr};
  nn::LayerNorm norm{nullptr};
  torch::Tensor scale;
};
TORCH_MODULE(Tiny);

StateDict tiny_state(const std::string& prefix) {
  StateDict s;
  s.insert(prefix + "fc1.weight", torch::randn({5, 3}), "test");
  s.insert(prefix + "fc1.bias", torch::randn({5}), "test");
  s.insert(prefix + "norm.weight", torch::randn({5}), "test");
  s.insert(prefix + "norm.bias", torch::randn({5}), "test");
  s.insert(prefix + "scale", torch::tensor({4, 5}, torch::kInt64), "test");
  return s;
}

TEST(StateDictLoad, NameForNameCopy) {
  const StateDict state = tiny_state("model.");
  Tiny tiny;
  const auto report = io::load_module(*tiny, state, "model");
  EXPECT_TRUE(report.ok());
  EXPECT_TRUE(torch::equal(tiny->fc1->weight, state.at("model.fc1.weight")));
  EXPECT_TRUE(torch::equal(tiny->norm->bias, state.at("model.norm.bias")));
  EXPECT_TRUE(torch::equal(tiny->scale, state.at("model.scale")));
}

TEST(StateDictLoad, ConvertsToTheModuleDtype) {
  StateDict state = tiny_state("");
  StateDict bf16;
  for (const auto& k : state.keys()) {
    const auto& t = state.at(k);
    bf16.insert(k, t.is_floating_point() ? t.to(torch::kBFloat16) : t, "bf16");
  }
  Tiny tiny;
  io::load_module(*tiny, bf16, "");
  EXPECT_EQ(tiny->fc1->weight.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(tiny->fc1->weight, bf16.at("fc1.weight").to(torch::kFloat32)));
}

TEST(StateDictLoad, EveryProblemReportedAndNothingWritten) {
  StateDict state;
  state.insert("model.fc1.weight", torch::randn({5, 4}), "head.pt");  // mis-shaped
  state.insert("model.norm.weight", torch::randn({5}), "head.pt");
  state.insert("model.norm.bias", torch::randn({5}), "head.pt");
  state.insert("model.scale", torch::tensor({1, 2}, torch::kInt64), "head.pt");
  state.insert("model.extra.weight", torch::randn({2}), "head.pt");  // unexpected
  Tiny tiny;
  tiny->norm->weight.fill_(std::numeric_limits<float>::quiet_NaN());
  const auto report = io::check_module(*tiny, state, "model");
  EXPECT_EQ(report.missing, std::vector<std::string>{"model.fc1.bias"});
  EXPECT_EQ(report.unexpected, std::vector<std::string>{"model.extra.weight"});
  ASSERT_EQ(report.mismatched.size(), 1u);
  EXPECT_EQ(report.mismatched[0], "model.fc1.weight: expected [5, 3], found [5, 4]");
  expect_error([&] { io::load_module(*tiny, state, "model"); },
               {"head.pt", "missing (1)", "model.fc1.bias", "unexpected (1)", "model.extra.weight",
                "model.fc1.weight: expected [5, 3], found [5, 4]"});
  EXPECT_TRUE(tiny->norm->weight.isnan().all().item<bool>()) << "a failed load wrote into the module";
}

TEST(StateDictLoad, IgnoredPrefixesAreNotUnexpected) {
  StateDict state = tiny_state("");
  state.insert("attn_pool.latent", torch::randn({1}), "test");
  Tiny tiny;
  io::LoadOptions options;
  options.ignored_prefixes = {"attn_pool."};
  const auto report = io::load_module(*tiny, state, "", options);
  EXPECT_EQ(report.ignored, std::vector<std::string>{"attn_pool.latent"});
}

TEST(StateDictLoad, LoadingFromAMappedFileReleasesPagesButKeepsValues) {
  const auto state = StateDict::from_safetensors(data_path("io", "sharded/model.safetensors.index.json"));
  struct OneImpl : torch::nn::Module {
    OneImpl() { weight = register_parameter("weight", torch::empty({4, 6}, torch::kBFloat16)); }
    torch::Tensor weight;
  };
  auto one = std::make_shared<OneImpl>();
  const torch::Tensor before = state.at("block.2.weight").clone();
  io::load_module(*one, state.subset("block.2"), "");
  EXPECT_TRUE(torch::equal(one->weight, before));
  EXPECT_TRUE(torch::equal(state.at("block.2.weight"), before));
}

// MappedFile::changed_on_disk: a file rewritten in place (new size, or new bytes and mtime) is a
// change; one replaced by a rename, or deleted, is not (the mapping keeps the old file).
TEST(MappedFile, ChangedOnDiskNamesWhatChanged) {
  const std::string dir = scratch_dir("mapped_file");
  const std::string path = dir + "/a.bin";
  const auto write = [](const std::string& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  };
  write(path, "abcdefgh");
  auto file = io::MappedFile::open(path);
  EXPECT_EQ(file->changed_on_disk(), "");

  write(dir + "/b.bin", "12345678");
  std::filesystem::rename(dir + "/b.bin", path);
  EXPECT_EQ(file->changed_on_disk(), "");
  std::filesystem::remove(path);
  EXPECT_EQ(file->changed_on_disk(), "");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file->data()), 8), "abcdefgh");

  write(path, "abcdefgh");
  file = io::MappedFile::open(path);
  write(path, "abcdefghi");
  EXPECT_EQ(file->changed_on_disk(), "its size went from 8 to 9 bytes");

  write(path, "abcdefgh");
  file = io::MappedFile::open(path);
  write(path, "ABCDEFGH");
  // The same size: the mtime tells. Set it one second on, as the file system's clock may not
  // have ticked since the mapping was made.
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  const struct timespec times[2] = {st.st_atim, {st.st_mtim.tv_sec + 1, st.st_mtim.tv_nsec}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
  EXPECT_EQ(file->changed_on_disk(), "it was written to");
}

// LoadOptions::after_stage: each element of a ModuleList (here two stacks of Tiny, one nested
// inside a stage) is a stage, called in order once its own tensors are written and before the
// next stage's; the tensors outside every stage are written after the last stage.
TEST(StateDictLoad, AfterStageSeesEachStageLoadedInOrder) {
  struct StackImpl : torch::nn::Module {
    StackImpl() {
      layers = register_module("layers", torch::nn::ModuleList());
      for (int i = 0; i < 3; ++i) layers->push_back(Tiny());
      head = register_module("head", Tiny());
    }
    torch::nn::ModuleList layers{nullptr};
    Tiny head{nullptr};
  };
  auto stack = std::make_shared<StackImpl>();
  StateDict state;
  for (const std::string prefix : {"layers.0.", "layers.1.", "layers.2.", "head."}) state.merge(tiny_state(prefix));
  for (const auto& p : stack->named_parameters()) p.value().detach().fill_(std::numeric_limits<float>::quiet_NaN());
  std::vector<std::string> seen;
  io::LoadOptions options;
  options.after_stage = [&](const std::string& path, torch::nn::Module& stage) {
    seen.push_back(path);
    for (const auto& p : stage.named_parameters())
      EXPECT_TRUE(torch::equal(p.value(), state.at(path + "." + p.key()))) << path << "." << p.key() << " not loaded yet";
    const int next = static_cast<int>(seen.size());  // the next stage is still unwritten
    if (next < 3)
      EXPECT_TRUE(stack->layers[next]->named_parameters()["fc1.weight"].isnan().all().item<bool>()) << path;
    EXPECT_TRUE(stack->head->fc1->weight.isnan().all().item<bool>()) << "written before the stages: " << path;
  };
  EXPECT_TRUE(io::load_module(*stack, state, "", options).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"layers.0", "layers.1", "layers.2"}));
  for (const auto& p : stack->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), state.at(p.key()))) << p.key();
}

// A failed check calls no stage and writes nothing, with or without after_stage.
TEST(StateDictLoad, AfterStageIsNotCalledWhenTheCheckFails) {
  auto list = std::make_shared<torch::nn::Module>();
  auto layers = list->register_module("layers", torch::nn::ModuleList(Tiny()));
  StateDict state = tiny_state("layers.0.");
  state.insert("layers.0.extra", torch::randn({1}), "test");
  io::LoadOptions options;
  int calls = 0;
  options.after_stage = [&](const std::string&, torch::nn::Module&) { ++calls; };
  expect_error([&] { io::load_module(*list, state, "", options); }, {"unexpected (1)", "layers.0.extra"});
  EXPECT_EQ(calls, 0);
}

TEST(StateDictApi, SubsetPrefixAndErrors) {
  const StateDict state = tiny_state("model.");
  const StateDict sub = state.subset("model.fc1");
  EXPECT_EQ(sub.keys(), (std::vector<std::string>{"bias", "weight"}));
  EXPECT_TRUE(state.has_prefix("model.norm"));
  EXPECT_FALSE(state.has_prefix("model.no"));
  EXPECT_EQ(state.numel(), 15 + 5 + 5 + 5 + 2);
  expect_error([&] { state.at("model.fc1.weigth"); }, {"no tensor 'model.fc1.weigth'", "nearest"});
  StateDict dup = tiny_state("model.");
  expect_error([&] { dup.insert("model.scale", torch::ones({1}), "b.pt"); }, {"b.pt", "'model.scale'", "also in test"});
}

TEST(CheckpointDirectory, TinyReleaseLayoutMatchesTheReferenceCounts) {
  const auto ckpt = io::Checkpoint::open(data_path("io", "checkpoint_tiny"));
  const auto expected = io::read_json_file(data_path("io", "checkpoint_tiny.json"));
  const auto parts = io::summarize(ckpt);
  size_t seen = 0;
  for (const auto& part : parts) {
    SCOPED_TRACE(part.name);
    ASSERT_TRUE(expected["components"].contains(part.name));
    const auto& e = expected["components"][part.name];
    EXPECT_EQ(part.tensors, e["tensors"].get<size_t>());
    EXPECT_EQ(part.parameters, e["parameters"].get<int64_t>());
    EXPECT_EQ(part.dtypes, (e["dtypes"].get<std::map<std::string, size_t>>()));
    ++seen;
  }
  EXPECT_EQ(seen, expected["components"].size());
  EXPECT_TRUE(ckpt.config.focus.has_value());
  EXPECT_TRUE(ckpt.action_head.contains("model.mlp_resnet_blocks.0.gate.0.weight"));  // `module.` stripped
  EXPECT_TRUE(ckpt.norm_stats.count("libero_spatial_no_noops"));
  ASSERT_TRUE(ckpt.preprocessor.has_value());
  EXPECT_EQ(ckpt.files.tokenizer.size(), 5u);
}

TEST(CheckpointDirectory, DiscoveryErrors) {
  expect_error([] { io::CheckpointFiles::discover("/nonexistent/ckpt"); }, {"/nonexistent/ckpt", "not a directory"});
  const auto dir = scratch_dir("discover");
  expect_error([&] { io::CheckpointFiles::discover(dir); }, {dir, "no config.json"});
  copy_file(data_path("io", "checkpoint_tiny/config.json"), dir + "/config.json");
  expect_error([&] { io::CheckpointFiles::discover(dir); }, {dir, "no model.safetensors"});
  copy_file(data_path("io", "dtypes.safetensors"), dir + "/model.safetensors");
  copy_file(data_path("io", "state_dict.pt"), dir + "/action_head--100_checkpoint.pt");
  copy_file(data_path("io", "state_dict.pt"), dir + "/action_head--200_checkpoint.pt");
  expect_error([&] { io::CheckpointFiles::discover(dir); }, {"2 candidates for the action head", "action_head--100_checkpoint.pt"});
}

}  // namespace
}  // namespace focusvla
