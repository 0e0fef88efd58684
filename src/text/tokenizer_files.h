#pragma once
// Loading the tokenizer's files (private to src/text/): tokenizer.json (HF fast format), or
// vocab.json + merges.txt with tokenizer_config.json and added_tokens.json. Every error names
// the file and the line or key.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "added_tokens.h"

namespace focusvla::bpe {

// The pre-tokenizer pattern of Qwen2's tokenizer.json (HF `Qwen2Tokenizer`), verbatim.
constexpr const char* kQwen2Pattern =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

struct MergeLine {
  std::string left;
  std::string right;
  size_t number;  // line number in merges.txt, or index in tokenizer.json's model.merges
};

struct TokenizerParts {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<MergeLine> merges;
  std::string merge_label_prefix;  // merge_label_prefix + number + merge_label_suffix names one
  std::string merge_label_suffix;
  std::vector<AddedToken> added;
  std::string pattern = kQwen2Pattern;
  bool nfc = true;
  bool ignore_merges = false;
  std::string source;  // the file(s) loaded, for errors
};

// `path` (tokenizer.json): model (BPE only), normalizer (none or NFC), pre-tokenizer (the Qwen2
// shape), decoder (ByteLevel) and added tokens.
TokenizerParts load_tokenizer_json(const std::filesystem::path& path);

// `dir`/vocab.json + merges.txt, with the added tokens of tokenizer_config.json
// (added_tokens_decoder) and added_tokens.json; Qwen2's normalizer and pre-tokenizer.
TokenizerParts load_vocab_and_merges(const std::filesystem::path& dir);

}  // namespace focusvla::bpe
