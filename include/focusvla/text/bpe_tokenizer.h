#pragma once
// Byte-level BPE tokenizer for Qwen2 / Qwen2.5, exact to HF `tokenizers` (checked against
// tokenizers 0.23 by tests/python/gen_text.py and tests/text/test_bpe_tokenizer.cpp).
//
// encode(text), as the HF pipeline does it:
//   1. the text must be valid UTF-8 (else Error naming the byte offset);
//   2. added tokens with normalized=false (all 22 Qwen special tokens) are cut out of the raw
//      text, leftmost-longest, and become their ids;
//   3. every remaining span is NFC-normalized, then added tokens with normalized=true are cut out;
//   4. every remaining span is split by the Qwen2 pre-tokenizer regex (PCRE2), each piece is
//      mapped byte-wise to the GPT-2 byte-level alphabet and merged by BPE (lowest merge rank
//      first, leftmost on ties); no BOS/EOS is added.
// decode(ids) maps each token back through the byte-level alphabet (added tokens give their
// text) and replaces invalid UTF-8 with U+FFFD, as HF's ByteLevel decoder does.
//
// All const methods may be called concurrently; the word cache is sharded and locked.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace focusvla {

class BpeTokenizer {
 public:
  // Loads `dir/tokenizer.json` (HF fast format) when present, else `dir/vocab.json` +
  // `dir/merges.txt` with the added tokens of `tokenizer_config.json` (added_tokens_decoder)
  // and `added_tokens.json` and the Qwen2 normalizer and pre-tokenizer.
  // Throws Error naming the file (and the line or key) on anything missing or inconsistent.
  static BpeTokenizer from_directory(const std::string& dir);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  // Token ids of `text`. Empty text gives no ids. Throws Error on invalid UTF-8.
  std::vector<int32_t> encode(const std::string& text) const;

  // Text of `ids`; special tokens give their text. Throws Error on an id with no token.
  std::string decode(const std::vector<int32_t>& ids) const;

  // Id of a token spelled as in the vocabulary (byte-level alphabet, e.g. "Ġthe") or of an
  // added token ("<|im_start|>"). token_to_id throws Error when unknown, find returns nullopt.
  int32_t token_to_id(const std::string& token) const;
  std::optional<int32_t> find(const std::string& token) const;

  // The pre-tokenizer regex as HF spells it (Oniguruma syntax; compiled with PCRE2).
  const std::string& pre_tokenizer_pattern() const;

  // Number of distinct ids: vocabulary plus added tokens (151665 for Qwen2.5).
  size_t vocab_size() const;

  // The word cache maps a pre-tokenized piece to its ids. `entries` bounds it (0 disables it;
  // a full shard is emptied and refilled). Default 65536.
  void set_cache_capacity(size_t entries);
  void clear_cache() const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace focusvla
