// Unicode for the tokenizer: character classes and HF's NFC (see unicode.h).

#include "unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "focusvla/core/error.h"
#include "utf8.h"

namespace focusvla::bpe {
namespace {

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

}  // namespace

bool is_white_space(char32_t cp) { return in_ranges(kWhiteSpace, cp); }

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

bool nfc_trivially(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0xCC; });
}

std::string hf_nfc(std::string_view text) {
  std::string out;
  size_t run_start = 0;
  utf8::for_each_code_point(text, [&](char32_t cp, size_t offset, size_t length) {
    if (!in_ranges(kOpaqueToHfNfc, cp)) return;
    out += utf8proc_nfc(text.substr(run_start, offset - run_start));
    out.append(text.substr(offset, length));
    run_start = offset + length;
  });
  out += utf8proc_nfc(text.substr(run_start));
  return out;
}

}  // namespace focusvla::bpe
