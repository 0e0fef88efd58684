// Fuzz target: BpeTokenizer::encode / decode with the real Qwen2.5 tokenizer (loaded once, from
// $FOCUSVLA_FUZZ_TOKENIZER or the project's assets/qwen2.5-tokenizer), and the prompt builder in
// front of it (lowercase + build_prompt, what Policy::act does with an instruction).
// Input: arbitrary bytes, used three ways:
//   1. as is: valid UTF-8 must encode, and every id must decode; invalid UTF-8 must give
//      focusvla::Error (from encode and from lowercase alike), never a crash or a token list;
//   2. made valid (each ill-formed subsequence replaced by U+FFFD, as decode does), so that random
//      bytes still reach the normalizer, the added-token splitter, the regex and BPE;
//   3. inside both prompt formats.
// The word cache is off so that an input always takes the same path (libFuzzer needs that).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/text/bpe_tokenizer.h"
#include "focusvla/text/prompt.h"
#include "fuzz_util.h"

#ifndef FOCUSVLA_FUZZ_DEFAULT_TOKENIZER
#define FOCUSVLA_FUZZ_DEFAULT_TOKENIZER "assets/qwen2.5-tokenizer"
#endif

using focusvla::fuzz::fail;

namespace {

focusvla::BpeTokenizer* tokenizer = nullptr;

// Length of the well-formed UTF-8 sequence at s (Unicode Table 3-7), or 0 when ill-formed; in
// that case *bad is the length of the maximal ill-formed subpart (>= 1).
size_t utf8_sequence(const unsigned char* s, size_t n, size_t* bad) {
  const unsigned char c = s[0];
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else {
    *bad = 1;
    return 0;
  }
  for (size_t i = 1; i < len; ++i) {
    if (i >= n || s[i] < lo || s[i] > hi) {
      *bad = i;
      return 0;
    }
    lo = 0x80, hi = 0xBF;
  }
  return len;
}

bool is_valid_utf8(const std::string& text, std::string* repaired) {
  bool valid = true;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    size_t bad = 0;
    const size_t len = utf8_sequence(s + i, text.size() - i, &bad);
    if (len == 0) {
      valid = false;
      repaired->append("\xEF\xBF\xBD");
      i += bad;
    } else {
      repaired->append(text, i, len);
      i += len;
    }
  }
  return valid;
}

// Encodes valid UTF-8 text, which must succeed, and decodes the ids, which must succeed too.
void encode_valid(const std::string& text) {
  std::vector<int32_t> ids;
  try {
    ids = tokenizer->encode(text);
  } catch (const focusvla::Error& e) {
    fail(std::string("encode rejected valid UTF-8: ") + e.what());
  }
  if (text.empty() != ids.empty()) fail("encode: empty text and empty ids must go together");
  try {
    (void)tokenizer->decode(ids);
  } catch (const focusvla::Error& e) {
    fail(std::string("decode rejected ids from encode: ") + e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("FOCUSVLA_FUZZ_TOKENIZER");
  tokenizer = new focusvla::BpeTokenizer(
      focusvla::BpeTokenizer::from_directory(dir != nullptr ? dir : FOCUSVLA_FUZZ_DEFAULT_TOKENIZER));
  tokenizer->set_cache_capacity(0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string repaired;
  const bool valid = is_valid_utf8(text, &repaired);

  if (valid) {
    encode_valid(text);
  } else {
    try {
      (void)tokenizer->encode(text);
      fail("encode accepted invalid UTF-8");
    } catch (const focusvla::Error&) {
    }
    encode_valid(repaired);
  }

  // The prompt path: lowercase (Python's str.lower) inside the template, then encode.
  try {
    for (const auto format : {focusvla::PromptFormat::openvla, focusvla::PromptFormat::qwen_chat}) {
      const std::string prompt = focusvla::build_prompt(format, text);
      if (!valid) fail("build_prompt accepted invalid UTF-8");
      encode_valid(prompt);
    }
  } catch (const focusvla::Error& e) {
    if (valid) fail(std::string("build_prompt rejected valid UTF-8: ") + e.what());
  }
  return 0;
}
