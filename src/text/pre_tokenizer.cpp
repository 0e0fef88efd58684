// The tokenizer's pre-tokenizer: the Oniguruma -> PCRE2 rewrite and the splitter (see
// pre_tokenizer.h).

#include "pre_tokenizer.h"

#include <cstdint>
#include <cstdio>
#include <memory>

#include "focusvla/core/error.h"
#include "unicode.h"

namespace focusvla::bpe {
namespace {

std::string class_body(const CodeRange* ranges, size_t count) {
  std::string body;
  char buffer[40];
  for (size_t i = 0; i < count; ++i) {
    const auto first = static_cast<unsigned>(ranges[i].first);
    const auto last = static_cast<unsigned>(ranges[i].last);
    if (first == last) {
      std::snprintf(buffer, sizeof buffer, "\\x{%X}", first);
    } else {
      std::snprintf(buffer, sizeof buffer, "\\x{%X}-\\x{%X}", first, last);
    }
    body += buffer;
  }
  return body;
}

template <size_t N>
std::string class_body(const CodeRange (&ranges)[N]) {
  return class_body(ranges, N);
}

// The escape starting at pattern[i] (a backslash): "\p{L}", "\pL", "\x{41}" or two characters.
std::string escape_at(const std::string& pattern, size_t i) {
  if (i + 1 >= pattern.size()) return pattern.substr(i);
  const char kind = pattern[i + 1];
  if ((kind == 'p' || kind == 'P' || kind == 'x') && i + 2 < pattern.size() &&
      pattern[i + 2] == '{') {
    const size_t close = pattern.find('}', i + 3);
    check(close != std::string::npos, "pre-tokenizer pattern", "unterminated escape");
    return pattern.substr(i, close - i + 1);
  }
  if ((kind == 'p' || kind == 'P') && i + 2 < pattern.size()) return pattern.substr(i, 3);
  return pattern.substr(i, 2);
}

// Class body (no brackets) for \p{L} or \p{N} with the newer code points, or "" for others.
std::string property_body(const std::string& escape) {
  const std::string name =
      escape.size() == 3 ? escape.substr(2) : escape.substr(3, escape.size() - 4);
  if (name == "L") return "\\p{L}" + class_body(kLettersAfterUnicode14);
  if (name == "N") return "\\p{N}" + class_body(kNumbersAfterUnicode14);
  return {};
}

std::string translate_escape(const std::string& escape, bool in_class) {
  const char kind = escape.size() > 1 ? escape[1] : '\0';
  std::string body;
  bool negated = false;
  if (kind == 's' || kind == 'S') {
    body = class_body(kWhiteSpace);
    negated = kind == 'S';
  } else if (kind == 'p' || kind == 'P') {
    body = property_body(escape);
    negated = kind == 'P';
  }
  if (body.empty()) return escape;
  if (!in_class) return (negated ? "[^" : "[") + body + "]";
  check(!negated, "pre-tokenizer pattern",
        "negated class escape " + escape + " inside a character class is not supported");
  return body;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

std::string error_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string onig_to_pcre2(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      const std::string escape = escape_at(pattern, i);
      out += translate_escape(escape, in_class);
      i += escape.size() - 1;
    } else if (!in_class && c == '[') {
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      in_class = true;
    } else if (in_class && c == '[') {
      const size_t close = pattern.find(":]", i);
      check(i + 1 < pattern.size() && pattern[i + 1] == ':' && close != std::string::npos,
            "pre-tokenizer pattern", "nested character classes are not supported");
      out += pattern.substr(i, close + 2 - i);
      i = close + 1;
    } else {
      if (in_class && c == ']') in_class = false;
      out += c;
    }
  }
  return out;
}

RegexSplitter::RegexSplitter(const std::string& onig_pattern) : source_(onig_pattern) {
  const std::string pattern = onig_to_pcre2(onig_pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  check(code_ != nullptr, "pre-tokenizer pattern '" + onig_pattern + "'",
        "PCRE2 cannot compile it: " + error_message(error));
  uint32_t jit_available = 0;
  pcre2_config(PCRE2_CONFIG_JIT, &jit_available);
  if (jit_available) pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

RegexSplitter::~RegexSplitter() { pcre2_code_free(code_); }

pcre2_match_data* RegexSplitter::thread_match_data() {
  static thread_local MatchData data(pcre2_match_data_create(1, nullptr));
  if (data == nullptr) throw Error("pre-tokenizer: out of memory");
  return data.get();
}

bool RegexSplitter::find(std::string_view text, size_t from, pcre2_match_data* data, size_t& begin,
                         size_t& end) const {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc = pcre2_match(code_, subject, text.size(), from, PCRE2_NO_UTF_CHECK, data, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = match_with_large_stack(text, from, data);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) throw Error("pre-tokenizer: PCRE2 match failed: " + error_message(rc));
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
  begin = ovector[0];
  end = ovector[1];
  return true;
}

int RegexSplitter::match_with_large_stack(std::string_view text, size_t from,
                                          pcre2_match_data* data) const {
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 512 * 1024 * 1024, nullptr);
  pcre2_jit_stack_assign(context, nullptr, stack);
  const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from,
                             PCRE2_NO_UTF_CHECK, data, context);
  pcre2_jit_stack_free(stack);
  pcre2_match_context_free(context);
  return rc;
}

}  // namespace focusvla::bpe
