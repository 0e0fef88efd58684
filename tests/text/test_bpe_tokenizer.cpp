// BpeTokenizer against the HF oracle of tests/python/gen_text.py, plus error cases.
// Needs FOCUSVLA_TEST_DATA (with text/tokenizer_cases.json) and FOCUSVLA_ASSETS (with
// qwen2.5-tokenizer/); a missing one fails the test with a message saying what to run.

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/text/bpe_tokenizer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using focusvla::BpeTokenizer;
using focusvla::Error;
using nlohmann::json;

constexpr const char* kHowToGenerate =
    "generate it with: python tests/python/gen_text.py $FOCUSVLA_TEST_DATA $FOCUSVLA_ASSETS";

fs::path env_dir(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string("environment variable ") + name + " is not set");
  }
  return fs::path(value);
}

json load_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing oracle file " + path.string() + "; " + kHowToGenerate);
  return json::parse(in);
}

fs::path text_data_dir() { return env_dir("FOCUSVLA_TEST_DATA") / "text"; }

fs::path qwen_dir() {
  const fs::path dir = env_dir("FOCUSVLA_ASSETS") / "qwen2.5-tokenizer";
  if (!fs::exists(dir / "vocab.json")) {
    throw std::runtime_error("missing tokenizer assets in " + dir.string());
  }
  return dir;
}

const BpeTokenizer& qwen() {
  static const BpeTokenizer tokenizer = BpeTokenizer::from_directory(qwen_dir().string());
  return tokenizer;
}

const json& oracle() {
  static const json cases = load_json(text_data_dir() / "tokenizer_cases.json");
  return cases;
}

std::vector<int32_t> ids_of(const json& value) { return value.get<std::vector<int32_t>>(); }

// A printable rendering of `text` for failure messages (JSON escaping).
std::string quoted(const std::string& text) { return json(text).dump(); }

std::string join(const std::vector<int32_t>& ids) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? "," : "") << ids[i];
  out << "]";
  return out.str();
}

// Encodes every case; returns a report of the first few mismatches (empty when all match).
std::string encode_mismatches(const BpeTokenizer& tokenizer, const json& cases) {
  std::ostringstream report;
  size_t mismatches = 0;
  for (const json& item : cases) {
    const std::string text = item["text"].get<std::string>();
    const std::vector<int32_t> expected = ids_of(item["ids"]);
    const std::vector<int32_t> actual = tokenizer.encode(text);
    if (actual == expected) continue;
    if (++mismatches <= 5) {
      report << "text " << quoted(text) << "\n  expected " << join(expected) << "\n  actual   "
             << join(actual) << "\n";
    }
  }
  if (mismatches > 0) report << mismatches << " of " << cases.size() << " cases differ\n";
  return report.str();
}

std::string decode_mismatches(const BpeTokenizer& tokenizer, const json& cases) {
  std::ostringstream report;
  size_t mismatches = 0;
  for (const json& item : cases) {
    const std::vector<int32_t> ids = ids_of(item["ids"]);
    const std::string expected = item["decoded"].get<std::string>();
    const std::string actual = tokenizer.decode(ids);
    if (actual == expected) continue;
    if (++mismatches <= 5) {
      report << "ids " << join(ids) << "\n  expected " << quoted(expected) << "\n  actual   "
             << quoted(actual) << "\n";
    }
  }
  if (mismatches > 0) report << mismatches << " of " << cases.size() << " cases differ\n";
  return report.str();
}

// ---------------------------------------------------------------------------------------------
// Conformance with HF tokenizers

TEST(TokenizerConformance, PatternIsHfQwen2Pattern) {
  EXPECT_EQ(qwen().pre_tokenizer_pattern(), oracle()["meta"]["pattern"].get<std::string>());
}

TEST(TokenizerConformance, EncodesEveryCaseLikeHf) {
  const json& cases = oracle()["cases"];
  ASSERT_GE(cases.size(), 2000u);
  EXPECT_EQ(encode_mismatches(qwen(), cases), "");
}

TEST(TokenizerConformance, DecodesEveryCaseLikeHf) {
  EXPECT_EQ(decode_mismatches(qwen(), oracle()["cases"]), "");
}

TEST(TokenizerConformance, DecodesArbitraryIdSequencesLikeHf) {
  const json& cases = oracle()["decode_cases"];
  ASSERT_GE(cases.size(), 600u);
  EXPECT_EQ(decode_mismatches(qwen(), cases), "");
}

TEST(TokenizerConformance, RoundTripsNfcText) {
  size_t checked = 0;
  for (const json& item : oracle()["cases"]) {
    const std::string text = item["text"].get<std::string>();
    if (item["decoded"].get<std::string>() != text) continue;  // not NFC: decodes to its NFC
    EXPECT_EQ(qwen().decode(qwen().encode(text)), text) << quoted(text);
    ++checked;
  }
  EXPECT_GE(checked, 1500u);
}

TEST(TokenizerConformance, VocabSizeCountsAddedTokens) {
  EXPECT_EQ(qwen().vocab_size(), oracle()["meta"]["vocab_size"].get<size_t>());
  EXPECT_EQ(qwen().vocab_size(), 151665u);
}

void expect_tokenizer_json_matches(const char* subdir) {
  const fs::path dir = text_data_dir() / subdir;
  if (!fs::exists(dir / "tokenizer.json")) {
    FAIL() << "missing " << (dir / "tokenizer.json").string() << "; " << kHowToGenerate;
  }
  const BpeTokenizer tokenizer = BpeTokenizer::from_directory(dir.string());
  const json expected = load_json(text_data_dir() / "tokenizer_json_cases.json");
  EXPECT_EQ(tokenizer.vocab_size(), expected["meta"]["vocab_size"].get<size_t>());
  EXPECT_EQ(encode_mismatches(tokenizer, expected["cases"]), "");
  EXPECT_EQ(decode_mismatches(tokenizer, expected["cases"]), "");
  EXPECT_EQ(decode_mismatches(tokenizer, expected["decode_cases"]), "");
}

TEST(TokenizerConformance, TokenizerJsonWithPairMerges) {
  expect_tokenizer_json_matches("tokenizer_json");
}

TEST(TokenizerConformance, TokenizerJsonWithStringMerges) {
  expect_tokenizer_json_matches("tokenizer_json_string_merges");
}

// ---------------------------------------------------------------------------------------------
// Basics

TEST(TokenizerBasics, EmptyTextGivesNoIds) {
  EXPECT_TRUE(qwen().encode("").empty());
  EXPECT_EQ(qwen().decode({}), "");
}

TEST(TokenizerBasics, SpecialTokensAreAtomic) {
  const int32_t im_start = qwen().token_to_id("<|im_start|>");
  const int32_t im_end = qwen().token_to_id("<|im_end|>");
  EXPECT_EQ(im_start, 151644);
  EXPECT_EQ(im_end, 151645);
  EXPECT_EQ(qwen().encode("<|im_start|><|im_end|>"), (std::vector<int32_t>{im_start, im_end}));
  EXPECT_EQ(qwen().decode({im_start, im_end}), "<|im_start|><|im_end|>");
}

TEST(TokenizerBasics, FindsVocabularyAndAddedTokens) {
  EXPECT_EQ(qwen().find("<|endoftext|>"), std::optional<int32_t>(151643));
  EXPECT_EQ(qwen().find("<|file_sep|>"), std::optional<int32_t>(151664));
  ASSERT_TRUE(qwen().find("\xC4\xA0the").has_value());  // "Ġthe"
  EXPECT_EQ(qwen().encode(" the"), std::vector<int32_t>{*qwen().find("\xC4\xA0the")});
  EXPECT_FALSE(qwen().find("no such token").has_value());
}

TEST(TokenizerBasics, SameIdsWithoutCache) {
  BpeTokenizer tokenizer = BpeTokenizer::from_directory(qwen_dir().string());
  tokenizer.set_cache_capacity(0);
  EXPECT_EQ(encode_mismatches(tokenizer, oracle()["cases"]), "");
  tokenizer.set_cache_capacity(8);  // tiny: shards keep emptying and refilling
  EXPECT_EQ(encode_mismatches(tokenizer, oracle()["cases"]), "");
}

TEST(TokenizerBasics, LongInputsRoundTrip) {
  const std::vector<std::string> texts = {std::string(200000, ' '), std::string(200000, 'a'),
                                          std::string(100000, '7'), std::string(50000, '\n') + "x",
                                          [] {
                                            std::string cjk;
                                            for (int i = 0; i < 30000; ++i)
                                              cjk += "\xE7\x9A\x84";  // U+7684
                                            return cjk;
                                          }()};
  for (const std::string& text : texts) {
    EXPECT_EQ(qwen().decode(qwen().encode(text)), text) << "length " << text.size();
  }
}

TEST(TokenizerBasics, MovedTokenizerStillWorks) {
  BpeTokenizer first = BpeTokenizer::from_directory(qwen_dir().string());
  const std::vector<int32_t> ids = first.encode("put the bowl on the plate");
  BpeTokenizer second = std::move(first);
  EXPECT_EQ(second.encode("put the bowl on the plate"), ids);
}

// ---------------------------------------------------------------------------------------------
// Thread safety

TEST(TokenizerThreads, ConcurrentEncodeMatchesOracle) {
  const json& cases = oracle()["cases"];
  qwen().clear_cache();
  constexpr int kThreads = 8;
  std::atomic<size_t> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread walks the cases from a different start so that they race on the cache.
      const size_t n = cases.size();
      for (size_t k = 0; k < n; ++k) {
        const json& item = cases[(k + static_cast<size_t>(t) * n / kThreads) % n];
        if (qwen().encode(item["text"].get<std::string>()) != ids_of(item["ids"])) ++mismatches;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0u);
}

// ---------------------------------------------------------------------------------------------
// A tiny tokenizer written to a temporary directory, for merge order and file errors.

// GPT-2 byte-level symbol of each byte (UTF-8).
std::vector<std::string> byte_symbols() {
  std::vector<std::string> symbols(256);
  int extra = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : extra++;
    std::string& s = symbols[b];
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return symbols;
}

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("focusvla_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { focusvla::testing::remove_tree(path_.string()); }
  const fs::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  void write(const std::string& name, const std::string& content) const {
    std::ofstream(path_ / name, std::ios::binary) << content;
  }

 private:
  fs::path path_;
};

// vocab: the 256 byte symbols (ids 0..255) then `extra` tokens (ids 256...).
void write_mini(const TempDir& dir, const std::vector<std::string>& extra,
                const std::string& merges) {
  json vocab = json::object();
  const std::vector<std::string> symbols = byte_symbols();
  for (int b = 0; b < 256; ++b) vocab[symbols[b]] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + static_cast<int>(i);
  dir.write("vocab.json", vocab.dump());
  dir.write("merges.txt", "#version: 0.2\n" + merges);
}

// Runs `action`, expecting a focusvla::Error whose message contains every one of `parts`.
template <class Action>
void expect_error(Action&& action, const std::vector<std::string>& parts) {
  try {
    action();
    ADD_FAILURE() << "expected focusvla::Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "message: " << message;
    }
  }
}

TEST(TokenizerMerges, LowestRankMergesFirst) {
  TempDir dir;
  write_mini(dir, {"bc", "ab", "abc"}, "b c\na b\nab c\n");
  const BpeTokenizer tokenizer = BpeTokenizer::from_directory(dir.str());
  // "b c" has rank 0, so "abc" becomes a + bc; "ab c" never applies.
  EXPECT_EQ(tokenizer.encode("abc"), (std::vector<int32_t>{'a', 256}));
  EXPECT_EQ(tokenizer.encode("ab"), (std::vector<int32_t>{257}));
}

TEST(TokenizerMerges, EqualRanksMergeLeftmostFirst) {
  TempDir dir;
  write_mini(dir, {"aa", "aaaa"}, "a a\naa aa\n");
  const BpeTokenizer tokenizer = BpeTokenizer::from_directory(dir.str());
  EXPECT_EQ(tokenizer.encode("aaa"), (std::vector<int32_t>{256, 'a'}));
  EXPECT_EQ(tokenizer.encode("aaaaa"), (std::vector<int32_t>{257, 'a'}));
  // Long pieces take the heap path; the result must be the same.
  std::vector<int32_t> expected(50, 257);
  expected.push_back('a');
  EXPECT_EQ(tokenizer.encode(std::string(201, 'a')), expected);
}

TEST(TokenizerMerges, WithoutConfigFilesHasNoAddedTokens) {
  TempDir dir;
  write_mini(dir, {}, "");
  const BpeTokenizer tokenizer = BpeTokenizer::from_directory(dir.str());
  EXPECT_EQ(tokenizer.vocab_size(), 256u);
  EXPECT_EQ(tokenizer.encode("<|im_end|>").size(), 10u);
}

// ---------------------------------------------------------------------------------------------
// Errors (one test each)

class TokenizerInvalidUtf8 : public ::testing::TestWithParam<std::pair<std::string, size_t>> {};

TEST_P(TokenizerInvalidUtf8, ThrowsNamingTheByteOffset) {
  const auto& [text, offset] = GetParam();
  expect_error([&] { qwen().encode(text); },
               {"invalid UTF-8", "byte offset " + std::to_string(offset)});
}

INSTANTIATE_TEST_SUITE_P(
    TokenizerUtf8, TokenizerInvalidUtf8,
    ::testing::Values(std::make_pair(std::string("ab\x80"), size_t{2}),       // stray continuation
                      std::make_pair(std::string("abc\xE2\x82"), size_t{3}),  // truncated
                      std::make_pair(std::string("x\xE2\x82y"), size_t{1}),   // cut short
                      std::make_pair(std::string("\xC0\xAF"), size_t{0}),     // overlong
                      std::make_pair(std::string("ok \xED\xA0\x80"), size_t{3}),   // surrogate
                      std::make_pair(std::string("\xF4\x90\x80\x80"), size_t{0}),  // > U+10FFFF
                      std::make_pair(std::string("<|im_end|>\xFF"),
                                     size_t{10})));  // after a special

TEST(TokenizerErrors, MissingDirectoryNamesThePath) {
  expect_error([] { BpeTokenizer::from_directory("/nonexistent/focusvla/tokenizer"); },
               {"/nonexistent/focusvla/tokenizer", "does not exist"});
}

TEST(TokenizerErrors, MissingVocabNamesTheFile) {
  TempDir dir;
  dir.write("merges.txt", "#version: 0.2\n");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); },
               {(dir.path() / "vocab.json").string(), "cannot open"});
}

// The tokenizer's JSON files go through io::read_json_file: a number beyond double range and a
// deeply nested file are named errors, not an "internal error" or a stack overflow.
TEST(TokenizerErrors, UnreadableJsonNamesTheFile) {
  TempDir dir;
  write_mini(dir, {}, "");
  dir.write("tokenizer_config.json", "{\"model_max_length\": 1e500}");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"tokenizer_config.json", "invalid JSON"});
  dir.write("tokenizer_config.json", std::string(100000, '[') + std::string(100000, ']'));
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"tokenizer_config.json", "nest"});
}

// Fields of the wrong JSON type (found by fuzz_tokenizer_files): a named Error, never a
// nlohmann exception escaping as an "internal error".
TEST(TokenizerErrors, WrongJsonTypesNameTheFile) {
  TempDir dir;
  write_mini(dir, {}, "");
  for (const char* config : {"[]", R"({"added_tokens_decoder": {"300": {"content": "x", "single_word": "yes"}}})",
                             R"({"added_tokens_decoder": []})"}) {
    SCOPED_TRACE(config);
    dir.write("tokenizer_config.json", config);
    expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"tokenizer_config.json"});
  }
  fs::remove(dir.path() / "tokenizer_config.json");
  dir.write("added_tokens.json", "[1, 2]");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"added_tokens.json"});

  // tokenizer.json: the generated (valid) one with one field of the wrong type at a time.
  const json valid = load_json(text_data_dir() / "tokenizer_json" / "tokenizer.json");
  for (const auto& [pointer, value] : std::vector<std::pair<std::string, json>>{
           {"/normalizer", 5}, {"/added_tokens", json::object()}, {"/model/type", 7},
           {"/pre_tokenizer/pretokenizers", json::object()}, {"/added_tokens/0/single_word", "yes"}}) {
    SCOPED_TRACE(pointer);
    TempDir broken;
    json j = valid;
    j[json::json_pointer(pointer)] = value;
    broken.write("tokenizer.json", j.dump());
    expect_error([&] { BpeTokenizer::from_directory(broken.str()); }, {"tokenizer.json"});
  }
}

TEST(TokenizerErrors, MissingMergesNamesTheFile) {
  TempDir dir;
  write_mini(dir, {}, "");
  fs::remove(dir.path() / "merges.txt");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); },
               {(dir.path() / "merges.txt").string(), "cannot open"});
}

TEST(TokenizerErrors, MergePartNotInVocabNamesTheLine) {
  TempDir dir;
  write_mini(dir, {"ab"}, "a b\nab zz\n");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); },
               {"merges.txt line 3", "'zz'", "not in the vocabulary"});
}

TEST(TokenizerErrors, MergeResultNotInVocabNamesTheLine) {
  TempDir dir;
  write_mini(dir, {"ab"}, "a b\nb c\n");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); },
               {"merges.txt line 3", "'bc'", "not in the vocabulary"});
}

TEST(TokenizerErrors, MalformedMergeLineNamesTheLine) {
  TempDir dir;
  write_mini(dir, {"ab"}, "a b\na b c\n");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); },
               {"merges.txt line 3", "two tokens"});
}

TEST(TokenizerErrors, InvalidVocabJsonNamesTheFile) {
  TempDir dir;
  dir.write("vocab.json", "{\"a\": 0,");
  dir.write("merges.txt", "");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"vocab.json", "invalid JSON"});
}

TEST(TokenizerErrors, HugeTokenIdIsRejected) {
  TempDir dir;
  write_mini(dir, {}, "");
  dir.write("added_tokens.json", "{\"<|x|>\": 2000000000}");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"2000000000", "exceeds"});
}

TEST(TokenizerErrors, VocabLackingAByteSymbol) {
  TempDir dir;
  dir.write("vocab.json", "{\"a\": 0}");
  dir.write("merges.txt", "");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"byte-level symbol"});
}

TEST(TokenizerErrors, ConflictingAddedTokenIds) {
  TempDir dir;
  write_mini(dir, {}, "");
  dir.write("added_tokens.json", "{\"<|x|>\": 300}");
  dir.write("tokenizer_config.json",
            R"({"added_tokens_decoder": {"300": {"content": "<|y|>", "special": true}}})");
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); }, {"id 300", "<|x|>", "<|y|>"});
}

TEST(TokenizerErrors, UnsupportedTokenizerJsonPreTokenizer) {
  TempDir dir;
  json spec = {{"model", {{"type", "BPE"}, {"vocab", json::object()}, {"merges", json::array()}}},
               {"normalizer", nullptr},
               {"pre_tokenizer", {{"type", "Whitespace"}}},
               {"decoder", {{"type", "ByteLevel"}}}};
  dir.write("tokenizer.json", spec.dump());
  expect_error([&] { BpeTokenizer::from_directory(dir.str()); },
               {"tokenizer.json", "pre_tokenizer"});
}

TEST(TokenizerErrors, DecodeUnknownIdThrows) {
  expect_error([] { qwen().decode({9, 151665}); }, {"id 151665"});
  expect_error([] { qwen().decode({-1}); }, {"id -1"});
}

TEST(TokenizerErrors, TokenToIdUnknownThrows) {
  expect_error([] { qwen().token_to_id("<|no_such_token|>"); }, {"<|no_such_token|>"});
}

}  // namespace
