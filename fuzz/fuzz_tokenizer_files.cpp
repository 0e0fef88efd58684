// Fuzz target: the tokenizer files loader, BpeTokenizer::from_directory, on small tokenizers
// (the seeds are a few hundred tokens cut from Qwen2.5 by fuzz/gen_seeds.py, in both layouts).
// Input: one byte that picks the layout, then the files, separated by the line
// "\n--8<-- focusvla fuzz file --8<--\n":
//   layout byte even: tokenizer.json (HF fast format)
//   layout byte odd:  vocab.json, merges.txt, tokenizer_config.json, added_tokens.json (the
//                     files after the ones present are absent)
// They are written to a private temporary directory. What loads must encode a fixed text and
// decode the ids it gave.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/text/bpe_tokenizer.h"
#include "fuzz_util.h"

namespace fs = std::filesystem;
using focusvla::fuzz::fail;

namespace {

constexpr std::string_view kSeparator = "\n--8<-- focusvla fuzz file --8<--\n";
const char* const kFastLayout[] = {"tokenizer.json"};
const char* const kSlowLayout[] = {"vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json"};

fs::path scratch;

void remove_scratch() {
  std::error_code ignored;
  fs::remove_all(scratch, ignored);
}

void write_file(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out) fail("cannot write " + path.string());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string pattern = (fs::temp_directory_path() / "focusvla-fuzz-tokenizer-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) fail("mkdtemp failed");
  scratch = pattern;
  std::atexit(remove_scratch);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool slow = data[0] & 1;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);

  std::vector<std::string_view> parts;
  const size_t wanted = slow ? std::size(kSlowLayout) : std::size(kFastLayout);
  while (parts.size() + 1 < wanted) {
    const size_t at = rest.find(kSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(rest.substr(0, at));
    rest.remove_prefix(at + kSeparator.size());
  }
  parts.push_back(rest);

  for (const char* name : kFastLayout) fs::remove(scratch / name);
  for (const char* name : kSlowLayout) fs::remove(scratch / name);
  for (size_t i = 0; i < parts.size(); ++i)
    write_file(scratch / (slow ? kSlowLayout[i] : kFastLayout[i]), parts[i]);

  try {
    focusvla::BpeTokenizer tokenizer = focusvla::BpeTokenizer::from_directory(scratch.string());
    tokenizer.set_cache_capacity(0);
    for (const char* text : {"In: What action should the robot take to pick up the black bowl?\nOut:",
                             "<|im_start|>user\nÉtoile ΣΑΣ 123 héllo  wörld\t\r\n<|im_end|>", " a  b\n\n"}) {
      const std::vector<int32_t> ids = tokenizer.encode(text);
      try {
        (void)tokenizer.decode(ids);
      } catch (const focusvla::Error& e) {
        fail(std::string("decode rejected ids from encode: ") + e.what());
      }
    }
  } catch (const focusvla::Error& e) {
    focusvla::fuzz::rejected(e);
  }
  return 0;
}
