#pragma once
// The tokenizer's pre-tokenizer (private to src/text/): HF `Split(pattern, behavior=Isolated)`;
// matches and the gaps between them are the pieces. The pattern is written for Oniguruma and
// compiled with PCRE2 after the rewrite that unicode.h explains.

// pcre2.h requires the code unit width to be chosen before it is included.
#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "utf8.h"

namespace focusvla::bpe {

// Oniguruma pattern -> PCRE2 pattern: `\p{L}`, `\p{N}`, `\s`, `\S` become explicit classes with
// the code points of unicode.h. Throws Error on a construct the rewrite does not handle.
std::string onig_to_pcre2(const std::string& pattern);

class RegexSplitter {
 public:
  // Throws Error naming the pattern when PCRE2 cannot compile it.
  explicit RegexSplitter(const std::string& onig_pattern);
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;
  ~RegexSplitter();

  const std::string& source() const { return source_; }

  // Match data of the calling thread; only the whole match is read, so one ovector pair
  // serves every pattern (pcre2_match then returns 0 for patterns with groups).
  static pcre2_match_data* thread_match_data();

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
        search_from = begin + utf8::decode(text, begin).length;
      }
    }
    if (gap_start < text.size()) emit(text.substr(gap_start));
  }

 private:
  bool find(std::string_view text, size_t from, pcre2_match_data* data, size_t& begin,
            size_t& end) const;
  int match_with_large_stack(std::string_view text, size_t from, pcre2_match_data* data) const;

  std::string source_;
  pcre2_code* code_ = nullptr;
};

}  // namespace focusvla::bpe
