// Byte-level BPE (Qwen2 / Qwen2.5), exact to HF `tokenizers`. See the header for the pipeline.
//
// Two Unicode-version bridges keep us bit-exact with tokenizers 0.23 (verified over every code
// point by the oracle in tests/python/gen_text.py):
// - The pre-tokenizer regex is written for Oniguruma (Unicode 16 tables, `\s` = Unicode
//   White_Space). PCRE2 10.42 ships Unicode 14 and counts U+180E as `\s`. Before compiling we
//   rewrite `\p{L}`, `\p{N}`, `\s`, `\S` into explicit classes: PCRE2's `\p{L}` / `\p{N}` plus the
//   letters / digits Unicode 15 and 16 added, and the White_Space list for `\s`.
// - NFC: HF's normalizer (unicode-normalization-alignments) predates Unicode 11 and treats the
//   combining marks added since as plain starters; utf8proc 2.8 knows them. We normalize the
//   runs between such code points separately, which reproduces HF's result.

#include "focusvla/text/bpe_tokenizer.h"

// pcre2.h requires the code unit width to be chosen before it is included.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"

namespace focusvla {
namespace {

using nlohmann::json;

// The pre-tokenizer pattern of Qwen2's tokenizer.json (HF `Qwen2Tokenizer`), verbatim.
constexpr const char* kQwen2Pattern =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// Ids index a table, so they are bounded (far above any real vocabulary).
constexpr int32_t kMaxTokenId = (1 << 24) - 1;
constexpr size_t kDefaultCacheCapacity = 65536;
constexpr size_t kCacheShards = 16;
constexpr size_t kMaxCachedPieceBytes = 256;
// Pieces up to this many bytes are merged by a linear scan, longer ones with a heap.
constexpr size_t kLinearMergeLimit = 64;

struct CodeRange {
  char32_t first;
  char32_t last;
};

// Letters (\p{L}) assigned in Unicode 15.0 and 16.0, which Oniguruma in tokenizers 0.23 knows.
constexpr CodeRange kLettersAfterUnicode14[] = {
    {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3},
    {0x10D4A, 0x10D65}, {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x1123F, 0x11240},
    {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5},
    {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0},
    {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x1342F, 0x1342F},
    {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C},
    {0x18CFF, 0x18CFF}, {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1DF25, 0x1DF2A},
    {0x1E030, 0x1E06D}, {0x1E4D0, 0x1E4EB}, {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0},
    {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF},
};

// Numbers (\p{N}) assigned in Unicode 15.0 and 16.0.
constexpr CodeRange kNumbersAfterUnicode14[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x11F50, 0x11F59},
    {0x16130, 0x16139}, {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3},
    {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
};

// Unicode White_Space: what Oniguruma's `\s` and Rust regex's `\s` match.
constexpr CodeRange kWhiteSpace[] = {
    {0x09, 0x0D},     {0x20, 0x20},     {0x85, 0x85},     {0xA0, 0xA0},     {0x1680, 0x1680},
    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

// Code points HF's NFC treats as starters that compose with nothing, while utf8proc knows them
// as combining marks (Unicode 11+), plus U+11930, which utf8proc composes after U+11935.
constexpr CodeRange kOpaqueToHfNfc[] = {
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8D3},     {0x9FE, 0x9FE},
    {0xC3C, 0xC3C},     {0xD3B, 0xD3C},     {0xEBA, 0xEBA},     {0x1715, 0x1715},
    {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},   {0xA82C, 0xA82C},   {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x11930, 0x11930}, {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0},
    {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42},
    {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
    {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF},
    {0x1E4EC, 0x1E4EF},
};

// in_ranges() bisects, so every table must be sorted and disjoint.
template <size_t N>
constexpr bool sorted_and_disjoint(const CodeRange (&ranges)[N]) {
  for (size_t i = 0; i < N; ++i) {
    if (ranges[i].first > ranges[i].last) return false;
    if (i > 0 && ranges[i - 1].last >= ranges[i].first) return false;
  }
  return true;
}
static_assert(sorted_and_disjoint(kLettersAfterUnicode14), "kLettersAfterUnicode14 unsorted");
static_assert(sorted_and_disjoint(kNumbersAfterUnicode14), "kNumbersAfterUnicode14 unsorted");
static_assert(sorted_and_disjoint(kWhiteSpace), "kWhiteSpace unsorted");
static_assert(sorted_and_disjoint(kOpaqueToHfNfc), "kOpaqueToHfNfc unsorted");

template <size_t N>
bool in_ranges(const CodeRange (&ranges)[N], char32_t cp) {
  const CodeRange* end = ranges + N;
  const CodeRange* it =
      std::lower_bound(ranges, end, cp, [](const CodeRange& r, char32_t c) { return r.last < c; });
  return it != end && it->first <= cp;
}

// ---------------------------------------------------------------------------------------------
// Files

// Through io/json_file.h: errors name the file; numbers beyond double range and deep nesting
// are refused there.
std::string read_file(const std::filesystem::path& path) { return io::read_text_file(path.string()); }
json read_json(const std::filesystem::path& path) { return io::read_json_file(path.string()); }

// ---------------------------------------------------------------------------------------------
// UTF-8

// One step over UTF-8: the length of the well-formed sequence at `s`, or, when ill-formed, the
// length of its maximal subpart (Unicode ch. 3, U+FFFD substitution), which is at least 1.
struct Utf8Step {
  size_t length;
  bool valid;
};

Utf8Step utf8_step(const unsigned char* s, size_t available) {
  const unsigned char lead = s[0];
  if (lead < 0x80) return {1, true};
  size_t continuation = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    continuation = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    continuation = 2;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    continuation = 3;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return {1, false};
  }
  for (size_t i = 1; i <= continuation; ++i) {
    if (i >= available || s[i] < low || s[i] > high) return {i, false};
    low = 0x80;
    high = 0xBF;
  }
  return {continuation + 1, true};
}

// Bytes of the first code point of valid, non-empty UTF-8 `text`.
size_t code_point_length(std::string_view text) {
  return utf8_step(reinterpret_cast<const unsigned char*>(text.data()), text.size()).length;
}

// Decodes the well-formed sequence of `length` bytes at `s`.
char32_t decode_code_point(const unsigned char* s, size_t length) {
  if (length == 1) return s[0];
  char32_t cp = s[0] & (0xFF >> (length + 1));
  for (size_t i = 1; i < length; ++i) cp = (cp << 6) | (s[i] & 0x3F);
  return cp;
}

void append_utf8(char32_t cp, std::string& out) {
  utf8proc_uint8_t buffer[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buffer);
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

void validate_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    const Utf8Step step = utf8_step(s + i, text.size() - i);
    if (!step.valid) {
      throw Error("BpeTokenizer::encode: invalid UTF-8 at byte offset " + std::to_string(i));
    }
    i += step.length;
  }
}

// What Rust's String::from_utf8_lossy does: each maximal ill-formed subpart becomes U+FFFD.
std::string utf8_lossy(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  for (size_t i = 0; i < bytes.size();) {
    const Utf8Step step = utf8_step(s + i, bytes.size() - i);
    if (step.valid) {
      out.append(bytes, i, step.length);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += step.length;
  }
  return out;
}

// Calls visit(code_point, offset, length) for each code point of valid UTF-8 `text`.
template <class Visit>
void for_each_code_point(std::string_view text, Visit&& visit) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    const size_t length = utf8_step(s + i, text.size() - i).length;
    visit(decode_code_point(s + i, length), i, length);
    i += length;
  }
}

bool is_white_space(char32_t cp) { return in_ranges(kWhiteSpace, cp); }

// Rust regex `\w` (used by HF for single_word added tokens), from utf8proc's categories.
bool is_word_char(char32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// NFC

std::string utf8proc_nfc(std::string_view text) {
  if (text.empty()) return {};
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &result,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) throw Error(std::string("NFC normalization: ") + utf8proc_errmsg(n));
  std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
  return out;
}

// Below U+0300 nothing decomposes or combines, so such text is its own NFC.
bool nfc_trivially(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0xCC; });
}

std::string hf_nfc(std::string_view text) {
  std::string out;
  size_t run_start = 0;
  for_each_code_point(text, [&](char32_t cp, size_t offset, size_t length) {
    if (!in_ranges(kOpaqueToHfNfc, cp)) return;
    out += utf8proc_nfc(text.substr(run_start, offset - run_start));
    out.append(text.substr(offset, length));
    run_start = offset + length;
  });
  out += utf8proc_nfc(text.substr(run_start));
  return out;
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level alphabet: every byte is shown as a printable code point.

struct ByteLevelAlphabet {
  std::array<std::string, 256> symbol_of_byte;  // UTF-8 of the code point for each byte
  std::array<int16_t, 324> byte_of_symbol;      // inverse, -1 where none
};

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet alphabet = [] {
    ByteLevelAlphabet a;
    a.byte_of_symbol.fill(-1);
    char32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next_extra++;
      append_utf8(cp, a.symbol_of_byte[b]);
      a.byte_of_symbol[cp] = static_cast<int16_t>(b);
    }
    return a;
  }();
  return alphabet;
}

std::string to_byte_level(std::string_view bytes) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string out;
  for (char c : bytes) out += alphabet.symbol_of_byte[static_cast<unsigned char>(c)];
  return out;
}

// HF's ByteLevel decoder on one token: its symbols as bytes, or its UTF-8 as is when one of
// its code points is outside the alphabet.
void append_token_bytes(const std::string& token, std::string& out) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string bytes;
  bool all_mapped = true;
  for_each_code_point(token, [&](char32_t cp, size_t, size_t) {
    const int b = cp < alphabet.byte_of_symbol.size() ? alphabet.byte_of_symbol[cp] : -1;
    if (b < 0) all_mapped = false;
    if (all_mapped) bytes += static_cast<char>(b);
  });
  out += all_mapped ? bytes : token;
}

// ---------------------------------------------------------------------------------------------
// Oniguruma pattern -> PCRE2 pattern (see the note at the top of the file)

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

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer: HF `Split(pattern, behavior=Isolated)`; matches and the gaps between them are
// the pieces.

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

class RegexSplitter {
 public:
  explicit RegexSplitter(const std::string& onig_pattern) : source_(onig_pattern) {
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
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;
  ~RegexSplitter() { pcre2_code_free(code_); }

  const std::string& source() const { return source_; }

  // Match data of the calling thread; only the whole match is read, so one ovector pair
  // serves every pattern (pcre2_match then returns 0 for patterns with groups).
  static pcre2_match_data* thread_match_data() {
    static thread_local MatchData data(pcre2_match_data_create(1, nullptr));
    if (data == nullptr) throw Error("pre-tokenizer: out of memory");
    return data.get();
  }

  // Calls emit(piece) for each piece of `text` (valid UTF-8), in order.
  template <class Emit>
  void split(std::string_view text, pcre2_match_data* data, Emit&& emit) const {
    size_t gap_start = 0;
    size_t search_from = 0;
    while (search_from <= text.size()) {
      size_t begin = 0;
      size_t end = 0;
      if (!find(text, search_from, data, begin, end)) break;
      if (begin > gap_start) emit(text.substr(gap_start, begin - gap_start));
      if (end > begin) {
        emit(text.substr(begin, end - begin));
        gap_start = search_from = end;
      } else {  // an empty match yields no piece; look again one code point further
        gap_start = begin;
        if (begin == text.size()) break;
        search_from = begin + code_point_length(text.substr(begin));
      }
    }
    if (gap_start < text.size()) emit(text.substr(gap_start));
  }

 private:
  static std::string error_message(int code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(code, buffer, sizeof buffer);
    return reinterpret_cast<const char*>(buffer);
  }

  bool find(std::string_view text, size_t from, pcre2_match_data* data, size_t& begin,
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

  int match_with_large_stack(std::string_view text, size_t from, pcre2_match_data* data) const {
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 512 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, stack);
    const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from,
                               PCRE2_NO_UTF_CHECK, data, context);
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    return rc;
  }

  std::string source_;
  pcre2_code* code_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Added tokens: cut out of the text before the pre-tokenizer (HF AddedVocabulary).

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

std::string_view last_code_point(std::string_view text) {
  size_t start = text.size();
  while (start > 0 && (static_cast<unsigned char>(text[start - 1]) & 0xC0) == 0x80) --start;
  return text.substr(start > 0 ? start - 1 : 0);
}

char32_t first_code_point_of(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  return decode_code_point(s, utf8_step(s, text.size()).length);
}

bool starts_with_word(std::string_view text) {
  return !text.empty() && is_word_char(first_code_point_of(text));
}

bool ends_with_word(std::string_view text) {
  return !text.empty() && is_word_char(first_code_point_of(last_code_point(text)));
}

// Offset where the white space at the end of `text` begins.
size_t trailing_space_start(std::string_view text) {
  size_t start = text.size();
  while (start > 0) {
    const std::string_view last = last_code_point(text.substr(0, start));
    if (!is_white_space(first_code_point_of(last))) break;
    start -= last.size();
  }
  return start;
}

// Length of the white space at the start of `text`.
size_t leading_space_length(std::string_view text) {
  size_t length = 0;
  for_each_code_point(text, [&](char32_t cp, size_t offset, size_t size) {
    if (length == offset && is_white_space(cp)) length = offset + size;
  });
  return length;
}

// Leftmost-longest, non-overlapping matching of a set of added tokens (a daachorse
// LeftmostLongest automaton in HF; the sets are small, so a first-byte index suffices).
class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;

  // `patterns[i]` is what `tokens[i]` matches (its content, or its normalized content).
  void add(const AddedToken& token, const std::string& pattern) {
    if (pattern.empty()) return;
    entries_.push_back({token, pattern});
    auto& bucket = by_first_byte_[static_cast<unsigned char>(pattern[0])];
    bucket.push_back(entries_.size() - 1);
    std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
      return entries_[a].pattern.size() > entries_[b].pattern.size();
    });
  }

  bool empty() const { return entries_.empty(); }

  // Calls emit(span, id) for each span of `text`: id = the added token's id, or -1 for text.
  template <class Emit>
  void split(std::string_view text, Emit&& emit) const {
    if (entries_.empty()) {
      emit(text, -1);
      return;
    }
    size_t start_offset = 0;
    size_t from = 0;
    const Entry* entry = nullptr;
    size_t match_start = 0;
    while ((entry = next_match(text, from, match_start)) != nullptr) {
      size_t start = match_start;
      size_t stop = match_start + entry->pattern.size();
      from = stop;
      const AddedToken& token = entry->token;
      if (token.single_word && !is_single_word(text, start, stop)) continue;
      if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
      if (token.rstrip) stop += leading_space_length(text.substr(stop));
      if (start_offset < start) emit(text.substr(start_offset, start - start_offset), -1);
      emit(text.substr(start, stop - start), token.id);
      start_offset = stop;
    }
    if (start_offset < text.size()) emit(text.substr(start_offset), -1);
  }

 private:
  struct Entry {
    AddedToken token;
    std::string pattern;
  };

  static bool is_single_word(std::string_view text, size_t start, size_t stop) {
    return !ends_with_word(text.substr(0, start)) && !starts_with_word(text.substr(stop));
  }

  // The leftmost (then longest) token occurrence at or after `from`.
  const Entry* next_match(std::string_view text, size_t from, size_t& position) const {
    for (size_t p = from; p < text.size(); ++p) {
      for (size_t index : by_first_byte_[static_cast<unsigned char>(text[p])]) {
        const std::string& pattern = entries_[index].pattern;
        if (text.compare(p, pattern.size(), pattern) == 0) {
          position = p;
          return &entries_[index];
        }
      }
    }
    return nullptr;
  }

  std::vector<Entry> entries_;
  std::array<std::vector<size_t>, 256> by_first_byte_;
};

// ---------------------------------------------------------------------------------------------
// BPE merges: (left id, right id) -> (rank, merged id), in an open-addressing table.

struct MergeRule {
  int32_t rank;
  int32_t merged;
};

class MergeTable {
 public:
  void reserve(size_t count) {
    size_t capacity = 16;
    while (capacity < 2 * count) capacity *= 2;
    keys_.assign(capacity, kEmpty);
    rules_.assign(capacity, MergeRule{0, 0});
    mask_ = capacity - 1;
  }

  // A later rule for the same pair replaces the earlier one, as in HF.
  void insert(int32_t left, int32_t right, MergeRule rule) {
    const uint64_t key = pack(left, right);
    size_t slot = home(key);
    while (keys_[slot] != kEmpty && keys_[slot] != key) slot = (slot + 1) & mask_;
    keys_[slot] = key;
    rules_[slot] = rule;
  }

  const MergeRule* find(int32_t left, int32_t right) const {
    if (keys_.empty()) return nullptr;
    const uint64_t key = pack(left, right);
    for (size_t slot = home(key);; slot = (slot + 1) & mask_) {
      if (keys_[slot] == key) return &rules_[slot];
      if (keys_[slot] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  size_t home(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
  }

  std::vector<uint64_t> keys_;
  std::vector<MergeRule> rules_;
  size_t mask_ = 0;
};

constexpr int32_t kNoMerge = INT32_MAX;

// Merges `ids` in place: the pair of lowest rank first, the leftmost one on ties. A linear scan
// over the pair ranks; good for the short pieces that make up almost all text.
void merge_linear(const MergeTable& merges, std::vector<int32_t>& ids) {
  if (ids.size() < 2) return;
  std::vector<MergeRule> pairs(ids.size() - 1);
  auto rule_at = [&](size_t i) {
    const MergeRule* rule = merges.find(ids[i], ids[i + 1]);
    return rule ? *rule : MergeRule{kNoMerge, -1};
  };
  for (size_t i = 0; i + 1 < ids.size(); ++i) pairs[i] = rule_at(i);
  while (!pairs.empty()) {
    const auto best = std::min_element(
        pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
    if (best->rank == kNoMerge) break;
    const size_t i = static_cast<size_t>(best - pairs.begin());
    ids[i] = best->merged;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(i));
    if (i < pairs.size()) pairs[i] = rule_at(i);
    if (i > 0) pairs[i - 1] = rule_at(i - 1);
  }
}

// The same merge order with a priority queue over (rank, position), as HF's Word::merge_all;
// for long pieces (a paragraph of CJK text is a single piece).
void merge_with_heap(const MergeTable& merges, std::vector<int32_t>& ids) {
  struct Symbol {
    int32_t id;
    size_t prev;
    size_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    size_t position;
    int32_t merged;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  constexpr size_t kNone = SIZE_MAX;
  const size_t n = ids.size();
  std::vector<Symbol> symbols(n);
  for (size_t i = 0; i < n; ++i)
    symbols[i] = {ids[i], i == 0 ? kNone : i - 1, i + 1 < n ? i + 1 : kNone, true};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](size_t left) {
    const size_t right = symbols[left].next;
    if (right == kNone) return;
    if (const MergeRule* rule = merges.find(symbols[left].id, symbols[right].id)) {
      queue.push({rule->rank, left, rule->merged});
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.position];
    if (!left.alive || left.next == kNone) continue;
    const MergeRule* current = merges.find(left.id, symbols[left.next].id);
    if (current == nullptr || current->merged != top.merged) continue;  // stale entry
    Symbol& right = symbols[left.next];
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (left.next != kNone) symbols[left.next].prev = top.position;
    if (left.prev != kNone) push_pair(left.prev);
    push_pair(top.position);
  }
  ids.clear();
  for (size_t i = 0; i != kNone; i = symbols[i].next) ids.push_back(symbols[i].id);
}

// ---------------------------------------------------------------------------------------------
// Word cache: piece bytes -> ids, sharded so that threads rarely wait on one another.

class WordCache {
 public:
  explicit WordCache(size_t capacity) : capacity_(capacity) {}

  void set_capacity(size_t capacity) {
    capacity_.store(capacity);
    clear();
  }

  bool lookup(std::string_view piece, std::vector<int32_t>& out) const {
    if (capacity_.load(std::memory_order_relaxed) == 0 || piece.size() > kMaxCachedPieceBytes) {
      return false;
    }
    Shard& shard = shard_of(piece);
    std::lock_guard<std::mutex> lock(shard.mutex);
    const auto it = shard.words.find(std::string(piece));
    if (it == shard.words.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }

  void store(std::string_view piece, const int32_t* ids, size_t count) const {
    const size_t capacity = capacity_.load(std::memory_order_relaxed);
    if (capacity == 0 || piece.size() > kMaxCachedPieceBytes) return;
    const size_t per_shard = std::max<size_t>(1, capacity / kCacheShards);
    Shard& shard = shard_of(piece);
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.words.size() >= per_shard) shard.words.clear();
    shard.words.emplace(std::string(piece), std::vector<int32_t>(ids, ids + count));
  }

  void clear() const {
    for (Shard& shard : shards_) {
      std::lock_guard<std::mutex> lock(shard.mutex);
      shard.words.clear();
    }
  }

 private:
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>> words;
  };

  Shard& shard_of(std::string_view piece) const {
    return shards_[std::hash<std::string_view>{}(piece) % kCacheShards];
  }

  std::atomic<size_t> capacity_;
  mutable std::array<Shard, kCacheShards> shards_;
};

// ---------------------------------------------------------------------------------------------
// Loading

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

bool is_token_id(const json& value) {
  if (!value.is_number_integer()) return false;
  const auto id = value.get<int64_t>();
  return id >= 0 && id <= INT32_MAX;
}

int32_t json_to_id(const json& value, const std::string& where) {
  check(is_token_id(value), where, "token id must be an integer in [0, 2^31), got " + value.dump());
  return static_cast<int32_t>(value.get<int64_t>());
}

std::unordered_map<std::string, int32_t> parse_vocab(const json& vocab, const std::string& where) {
  check(vocab.is_object(), where, "vocabulary must be a JSON object of token -> id");
  std::unordered_map<std::string, int32_t> result;
  result.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    if (!is_token_id(id)) json_to_id(id, where + ": token '" + token + "'");  // throws
    result.emplace(token, static_cast<int32_t>(id.get<int64_t>()));
  }
  return result;
}

// merges.txt: "#version" lines are skipped; every other line is "left right".
std::vector<MergeLine> parse_merges_txt(const std::string& text, const std::string& path) {
  std::vector<MergeLine> merges;
  size_t line_number = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      throw Error(path + " line " + std::to_string(line_number) +
                  ": expected two tokens separated by one space, got '" + line + "'");
    }
    merges.push_back({line.substr(0, space), line.substr(space + 1), line_number});
  }
  return merges;
}

AddedToken parse_added_token(const json& entry, int32_t id, const std::string& where) {
  check(entry.is_object() && entry.contains("content") && entry["content"].is_string(), where,
        "added token needs a string 'content'");
  AddedToken token;
  token.id = id;
  token.content = entry["content"].get<std::string>();
  token.single_word = entry.value("single_word", false);
  token.lstrip = entry.value("lstrip", false);
  token.rstrip = entry.value("rstrip", false);
  token.normalized = entry.value("normalized", !entry.value("special", false));
  token.special = entry.value("special", false);
  return token;
}

// Adds `token`; the same id twice must mean the same content.
void add_token(std::vector<AddedToken>& added, const AddedToken& token, const std::string& where) {
  for (const AddedToken& existing : added) {
    if (existing.id != token.id) continue;
    check(existing.content == token.content, where,
          "id " + std::to_string(token.id) + " is both '" + existing.content + "' and '" +
              token.content + "'");
    return;
  }
  added.push_back(token);
}

TokenizerParts load_vocab_and_merges(const std::filesystem::path& dir) {
  TokenizerParts parts;
  const auto vocab_path = dir / "vocab.json";
  const auto merges_path = dir / "merges.txt";
  parts.source = vocab_path.string() + " + " + merges_path.string();
  parts.vocab = parse_vocab(read_json(vocab_path), vocab_path.string());
  parts.merges = parse_merges_txt(read_file(merges_path), merges_path.string());
  parts.merge_label_prefix = merges_path.string() + " line ";

  const auto config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    const json config = read_json(config_path);
    const json decoder = config.value("added_tokens_decoder", json::object());
    for (const auto& [key, entry] : decoder.items()) {
      const std::string where = config_path.string() + ": added_tokens_decoder." + key;
      int32_t id = -1;
      try {
        id = json_to_id(json::parse(key), where);
      } catch (const json::exception&) {
        throw Error(where + ": key must be a token id");
      }
      add_token(parts.added, parse_added_token(entry, id, where), where);
    }
  }
  const auto added_path = dir / "added_tokens.json";
  if (std::filesystem::exists(added_path)) {
    const json added = read_json(added_path);
    check(added.is_object(), added_path.string(), "must be a JSON object of token -> id");
    for (const auto& [content, id_value] : added.items()) {
      const std::string where = added_path.string() + ": '" + content + "'";
      AddedToken token;
      token.id = json_to_id(id_value, where);
      token.content = content;
      token.special = true;
      add_token(parts.added, token, where);
    }
  }
  return parts;
}

std::vector<MergeLine> parse_json_merges(const json& merges, const std::string& where) {
  check(merges.is_array(), where, "must be an array");
  std::vector<MergeLine> result;
  result.reserve(merges.size());
  auto item_where = [&](size_t i) { return where + "[" + std::to_string(i) + "]"; };
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& merge = merges[i];
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        throw Error(item_where(i) + ": expected \"left right\", got '" + text + "'");
      }
      result.push_back({text.substr(0, space), text.substr(space + 1), i});
    } else {
      const bool pair =
          merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string();
      if (!pair) throw Error(item_where(i) + ": expected \"left right\" or [left, right]");
      result.push_back({merge[0].get<std::string>(), merge[1].get<std::string>(), i});
    }
  }
  return result;
}

bool is_null_or_empty(const json& object, const char* key) {
  return !object.contains(key) || object[key].is_null() ||
         (object[key].is_string() && object[key].get<std::string>().empty());
}

void check_bpe_model(const json& model, const std::string& where) {
  check(model.is_object() && model.value("type", std::string("BPE")) == "BPE", where,
        "only BPE models are supported");
  check(is_null_or_empty(model, "dropout"), where, "BPE dropout is not supported");
  check(is_null_or_empty(model, "continuing_subword_prefix"), where,
        "continuing_subword_prefix is not supported");
  check(is_null_or_empty(model, "end_of_word_suffix"), where,
        "end_of_word_suffix is not supported");
  check(!model.value("byte_fallback", false), where, "byte_fallback is not supported");
}

// Accepts no normalizer, NFC, or a Sequence of those; returns whether NFC applies.
bool parse_normalizer(const json& normalizer, const std::string& where) {
  if (normalizer.is_null()) return false;
  const std::string type = normalizer.value("type", std::string());
  if (type == "NFC") return true;
  check(type == "Sequence" && normalizer.contains("normalizers"), where,
        "unsupported normalizer '" + type + "' (supported: none, NFC)");
  bool nfc = false;
  for (const json& inner : normalizer["normalizers"]) nfc = parse_normalizer(inner, where) || nfc;
  return nfc;
}

// Accepts the Qwen2 shape: Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)].
std::string parse_pre_tokenizer(const json& pre, const std::string& where) {
  const std::string expected =
      "expected Sequence[Split(Regex, behavior Isolated), ByteLevel(use_regex false, "
      "add_prefix_space false)]";
  check(pre.is_object() && pre.value("type", std::string()) == "Sequence" &&
            pre.contains("pretokenizers") && pre["pretokenizers"].size() == 2,
        where, expected);
  const json& split = pre["pretokenizers"][0];
  const json& byte_level = pre["pretokenizers"][1];
  check(split.value("type", std::string()) == "Split" && split.contains("pattern") &&
            split["pattern"].contains("Regex") &&
            split.value("behavior", std::string()) == "Isolated" && !split.value("invert", false),
        where, expected);
  check(byte_level.value("type", std::string()) == "ByteLevel" &&
            !byte_level.value("use_regex", true) && !byte_level.value("add_prefix_space", true),
        where, expected);
  return split["pattern"]["Regex"].get<std::string>();
}

TokenizerParts load_tokenizer_json(const std::filesystem::path& path) {
  const std::string file = path.string();
  const json root = read_json(path);
  check(root.is_object() && root.contains("model"), file, "missing 'model'");
  TokenizerParts parts;
  parts.source = file;
  const json& model = root["model"];
  check_bpe_model(model, file + ": model");
  check(model.contains("vocab") && model.contains("merges"), file + ": model",
        "needs 'vocab' and 'merges'");
  parts.vocab = parse_vocab(model["vocab"], file + ": model.vocab");
  parts.merges = parse_json_merges(model["merges"], file + ": model.merges");
  parts.merge_label_prefix = file + ": model.merges[";
  parts.merge_label_suffix = "]";
  parts.ignore_merges = model.value("ignore_merges", false);
  parts.nfc = parse_normalizer(root.value("normalizer", json()), file + ": normalizer");
  parts.pattern =
      parse_pre_tokenizer(root.value("pre_tokenizer", json()), file + ": pre_tokenizer");
  const json decoder = root.value("decoder", json());
  check(decoder.is_object() && decoder.value("type", std::string()) == "ByteLevel",
        file + ": decoder", "only the ByteLevel decoder is supported");
  const json added = root.value("added_tokens", json::array());
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string where = file + ": added_tokens[" + std::to_string(i) + "]";
    check(added[i].contains("id"), where, "missing 'id'");
    add_token(parts.added, parse_added_token(added[i], json_to_id(added[i]["id"], where), where),
              where);
  }
  return parts;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  explicit Impl(TokenizerParts parts);

  void encode_text(std::string_view text, pcre2_match_data* data, std::vector<int32_t>& ids) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t> vocab;
  std::unordered_map<std::string, int32_t> added_ids;
  std::vector<std::string> token_of_id;  // decode text per id; empty where no token
  size_t id_count = 0;
  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};
  bool nfc = true;
  bool ignore_merges = false;
  RegexSplitter splitter;
  AddedTokenSplitter raw_tokens;         // added tokens with normalized=false
  AddedTokenSplitter normalized_tokens;  // added tokens with normalized=true
  WordCache cache{kDefaultCacheCapacity};
};

namespace {

// The id of `token`, a part or the result of `merge`; Error naming the merge when unknown.
int32_t merge_token_id(const std::unordered_map<std::string, int32_t>& vocab,
                       const std::string& token, const MergeLine& merge,
                       const TokenizerParts& parts) {
  const auto it = vocab.find(token);
  if (it != vocab.end()) return it->second;
  throw Error(parts.merge_label_prefix + std::to_string(merge.number) + parts.merge_label_suffix +
              " ('" + merge.left + " " + merge.right + "'): token '" + token +
              "' is not in the vocabulary");
}

}  // namespace

BpeTokenizer::Impl::Impl(TokenizerParts parts)
    : vocab(std::move(parts.vocab)),
      nfc(parts.nfc),
      ignore_merges(parts.ignore_merges),
      splitter(parts.pattern) {
  merges.reserve(parts.merges.size());
  for (size_t rank = 0; rank < parts.merges.size(); ++rank) {
    const MergeLine& line = parts.merges[rank];
    const int32_t left = merge_token_id(vocab, line.left, line, parts);
    const int32_t right = merge_token_id(vocab, line.right, line, parts);
    const int32_t merged = merge_token_id(vocab, line.left + line.right, line, parts);
    merges.insert(left, right, {static_cast<int32_t>(rank), merged});
  }

  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(alphabet.symbol_of_byte[b]);
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", b);
    check(it != vocab.end(), parts.source,
          std::string("the vocabulary lacks the byte-level symbol of byte ") + hex);
    byte_ids[b] = it->second;
  }

  int32_t max_id = -1;
  for (const auto& [token, id] : vocab) max_id = std::max(max_id, id);
  for (const AddedToken& token : parts.added) max_id = std::max(max_id, token.id);
  check(max_id <= kMaxTokenId, parts.source,
        "token id " + std::to_string(max_id) + " exceeds " + std::to_string(kMaxTokenId));
  token_of_id.assign(static_cast<size_t>(max_id) + 1, std::string());
  for (const auto& [token, id] : vocab) {
    if (!token_of_id[id].empty()) {
      throw Error(parts.source + ": id " + std::to_string(id) + " is used by both '" +
                  token_of_id[id] + "' and '" + token + "'");
    }
    token_of_id[id] = token;
  }

  std::sort(parts.added.begin(), parts.added.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  for (const AddedToken& token : parts.added) {
    if (token.content.empty()) continue;
    const auto in_vocab = vocab.find(token.content);
    check(in_vocab == vocab.end() || in_vocab->second == token.id, parts.source,
          "added token '" + token.content + "' has id " + std::to_string(token.id) +
              " but the vocabulary gives it " +
              std::to_string(in_vocab == vocab.end() ? -1 : in_vocab->second));
    check(token_of_id[token.id].empty() || token_of_id[token.id] == token.content, parts.source,
          "added token '" + token.content + "' reuses id " + std::to_string(token.id) + " of '" +
              token_of_id[token.id] + "'");
    const std::string pattern = token.normalized && nfc ? hf_nfc(token.content) : token.content;
    token_of_id[token.id] = token.normalized ? pattern : token.content;
    added_ids[token.content] = token.id;
    (token.normalized ? normalized_tokens : raw_tokens).add(token, pattern);
  }
  id_count = static_cast<size_t>(std::count_if(token_of_id.begin(), token_of_id.end(),
                                               [](const std::string& t) { return !t.empty(); }));
}

void BpeTokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  if (cache.lookup(piece, ids)) return;
  const size_t first = ids.size();
  if (ignore_merges) {
    const auto whole = vocab.find(to_byte_level(piece));
    if (whole != vocab.end()) {
      ids.push_back(whole->second);
      cache.store(piece, ids.data() + first, 1);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  for (char c : piece) symbols.push_back(byte_ids[static_cast<unsigned char>(c)]);
  if (symbols.size() <= kLinearMergeLimit) {
    merge_linear(merges, symbols);
  } else {
    merge_with_heap(merges, symbols);
  }
  ids.insert(ids.end(), symbols.begin(), symbols.end());
  cache.store(piece, symbols.data(), symbols.size());
}

void BpeTokenizer::Impl::encode_text(std::string_view text, pcre2_match_data* data,
                                     std::vector<int32_t>& ids) const {
  raw_tokens.split(text, [&](std::string_view span, int32_t id) {
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    auto encode_normalized = [&](std::string_view normalized) {
      normalized_tokens.split(normalized, [&](std::string_view part, int32_t part_id) {
        if (part_id >= 0) {
          ids.push_back(part_id);
          return;
        }
        splitter.split(part, data, [&](std::string_view piece) { encode_piece(piece, ids); });
      });
    };
    if (!nfc || nfc_trivially(span)) {
      encode_normalized(span);
    } else {
      encode_normalized(hf_nfc(span));
    }
  });
}

BpeTokenizer::BpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer BpeTokenizer::from_directory(const std::string& dir) {
  const std::filesystem::path root(dir);
  check(std::filesystem::is_directory(root), dir, "tokenizer directory does not exist");
  const auto tokenizer_json = root / "tokenizer.json";
  TokenizerParts parts = std::filesystem::exists(tokenizer_json)
                             ? load_tokenizer_json(tokenizer_json)
                             : load_vocab_and_merges(root);
  return BpeTokenizer(std::make_unique<Impl>(std::move(parts)));
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  validate_utf8(text);
  std::vector<int32_t> ids;
  if (text.empty()) return ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->encode_text(text, RegexSplitter::thread_match_data(), ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string bytes;
  for (const int32_t id : ids) {
    const bool known = id >= 0 && static_cast<size_t>(id) < impl_->token_of_id.size() &&
                       !impl_->token_of_id[id].empty();
    if (!known) throw Error("BpeTokenizer::decode: id " + std::to_string(id) + " has no token");
    append_token_bytes(impl_->token_of_id[id], bytes);
  }
  return utf8_lossy(bytes);
}

std::optional<int32_t> BpeTokenizer::find(const std::string& token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) return it->second;
  if (const auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

int32_t BpeTokenizer::token_to_id(const std::string& token) const {
  const std::optional<int32_t> id = find(token);
  check(id.has_value(), "BpeTokenizer::token_to_id", "unknown token '" + token + "'");
  return *id;
}

const std::string& BpeTokenizer::pre_tokenizer_pattern() const { return impl_->splitter.source(); }

size_t BpeTokenizer::vocab_size() const { return impl_->id_count; }

void BpeTokenizer::set_cache_capacity(size_t entries) { impl_->cache.set_capacity(entries); }

void BpeTokenizer::clear_cache() const { impl_->cache.clear(); }

}  // namespace focusvla
