#include "focusvla/text/prompt.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "focusvla/core/error.h"
#include "utf8.h"

namespace focusvla {
namespace {

constexpr const char* kOpenVlaPrefix = "In: What action should the robot take to ";
constexpr const char* kOpenVlaSuffix = "?\nOut:";
constexpr const char* kQwenChatPrefix =
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\nWhat action should the robot take to ";
constexpr const char* kQwenChatSuffix = "?<|im_end|>\n<|im_start|>assistant\n";

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Python's str.lower() (SPEC section 6) is the full lowercase mapping (SpecialCasing: U+0130 ->
// U+0069 U+0307) plus the Final_Sigma rule, in the Unicode version of the reference Python's
// unicodedata (3.11: Unicode 14.0). utf8proc gives neither: utf8proc_tolower is the simple
// mapping, UTF8PROC_CASEFOLD is case folding (ß -> ss, ς -> σ), it has no Cased / Case_Ignorable
// (they need Other_Lowercase / Other_Uppercase and Word_Break), and Debian 12's utf8proc 2.8.0 is
// Unicode 15.0: its simple mappings agree with Python's but for U+0130, its categories do not
// (111 code points new in 15.0 would be Cased or Case_Ignorable). So the tables below are measured
// from the reference Python's str.lower() by scripts/gen_unicode_lower.py (see there how), and
// UTF-8 is decoded and encoded by utf8.h (shared with the tokenizer). Binary searches: the tables
// are small (181 runs, 427 and 149 ranges) and ASCII-only text never reaches them.
struct LowerRun {
  char32_t first, last;
  uint8_t stride;
  int32_t delta;
};
struct LowerMulti {
  char32_t code_point;
  uint8_t size;
  char32_t lowered[3];
};
struct CodeRange {
  char32_t first, last;
};

#include "unicode_lower.inc"

bool in_ranges(const CodeRange* begin, const CodeRange* end, char32_t c) {
  const CodeRange* it = std::upper_bound(
      begin, end, c, [](char32_t value, const CodeRange& r) { return value < r.first; });
  return it != begin && c <= std::prev(it)->last;
}

bool case_ignorable(char32_t c) {
  return in_ranges(std::begin(kCaseIgnorable), std::end(kCaseIgnorable), c);
}

bool cased_not_ignorable(char32_t c) {
  return in_ranges(std::begin(kCasedNotIgnorable), std::end(kCasedNotIgnorable), c);
}

void append_utf8(std::string& out, char32_t c) { utf8::append(c, out); }

// The full lowercase mapping of c (U+03A3 gives its non-final form).
void append_lower(std::string& out, char32_t c) {
  const LowerRun* run =
      std::upper_bound(std::begin(kLowerRuns), std::end(kLowerRuns), c,
                       [](char32_t value, const LowerRun& r) { return value < r.first; });
  if (run != std::begin(kLowerRuns)) {
    --run;
    if (c <= run->last && (c - run->first) % run->stride == 0) {
      append_utf8(out, static_cast<char32_t>(static_cast<int32_t>(c) + run->delta));
      return;
    }
  }
  for (const LowerMulti& multi : kLowerMulti) {
    if (multi.code_point == c) {
      for (uint8_t k = 0; k < multi.size; ++k) append_utf8(out, multi.lowered[k]);
      return;
    }
  }
  append_utf8(out, c);
}

// CPython's handle_capital_sigma: the capital sigma at index i is final when, skipping
// Case_Ignorable code points, a Cased one precedes it and none follows it. Looks at the input,
// not at what was lowered.
bool final_sigma(const std::vector<char32_t>& cps, size_t i) {
  size_t j = i;
  while (j > 0 && case_ignorable(cps[j - 1])) --j;
  if (j == 0 || !cased_not_ignorable(cps[j - 1])) return false;
  j = i + 1;
  while (j < cps.size() && case_ignorable(cps[j])) ++j;
  return j == cps.size() || !cased_not_ignorable(cps[j]);
}

}  // namespace

PromptFormat parse_prompt_format(const std::string& name) {
  if (name == "openvla") return PromptFormat::openvla;
  if (name == "qwen-chat") return PromptFormat::qwen_chat;
  throw Error("prompt format '" + name + "': unknown (accepted: openvla, qwen-chat)");
}

std::string to_string(PromptFormat format) {
  return format == PromptFormat::openvla ? "openvla" : "qwen-chat";
}

size_t invalid_utf8_offset(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const utf8::Decoded d = utf8::decode(text, i);
    if (!d.valid) return i;
    i += d.length;
  }
  return std::string::npos;
}

std::string lowercase(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const bool ascii = std::all_of(text.begin(), text.end(),
                                 [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) {
    for (const char c : text) out += ascii_lower(c);
    return out;
  }
  // Final_Sigma looks both ways, so decode the whole text first.
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const utf8::Decoded d = utf8::decode(text, i);
    if (!d.valid) throw Error("lowercase: invalid UTF-8 at byte offset " + std::to_string(i));
    cps.push_back(d.code_point);
    i += d.length;
  }
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    if (c < 0x80) {
      out += ascii_lower(static_cast<char>(c));
    } else if (c == 0x03A3) {
      append_utf8(out, final_sigma(cps, i) ? 0x03C2 : 0x03C3);
    } else {
      append_lower(out, c);
    }
  }
  return out;
}

std::string build_prompt(PromptFormat format, const std::string& task) {
  const std::string lowered = lowercase(task);
  if (format == PromptFormat::openvla) return kOpenVlaPrefix + lowered + kOpenVlaSuffix;
  return kQwenChatPrefix + lowered + kQwenChatSuffix;
}

}  // namespace focusvla
