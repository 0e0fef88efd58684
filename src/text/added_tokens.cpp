// The tokenizer's added tokens (see added_tokens.h).

#include "added_tokens.h"

#include "unicode.h"
#include "utf8.h"

namespace focusvla::bpe {
namespace {

std::string_view last_code_point(std::string_view text) {
  size_t start = text.size();
  while (start > 0 && (static_cast<unsigned char>(text[start - 1]) & 0xC0) == 0x80) --start;
  return text.substr(start > 0 ? start - 1 : 0);
}

char32_t first_code_point_of(std::string_view text) { return utf8::decode(text, 0).code_point; }

bool starts_with_word(std::string_view text) {
  return !text.empty() && is_word_char(first_code_point_of(text));
}

bool ends_with_word(std::string_view text) {
  return !text.empty() && is_word_char(first_code_point_of(last_code_point(text)));
}

}  // namespace

size_t trailing_space_start(std::string_view text) {
  size_t start = text.size();
  while (start > 0) {
    const std::string_view last = last_code_point(text.substr(0, start));
    if (!is_white_space(first_code_point_of(last))) break;
    start -= last.size();
  }
  return start;
}

size_t leading_space_length(std::string_view text) {
  size_t length = 0;
  utf8::for_each_code_point(text, [&](char32_t cp, size_t offset, size_t size) {
    if (length == offset && is_white_space(cp)) length = offset + size;
  });
  return length;
}

void AddedTokenSplitter::add(const AddedToken& token, const std::string& pattern) {
  if (pattern.empty()) return;
  entries_.push_back({token, pattern});
  auto& bucket = by_first_byte_[static_cast<unsigned char>(pattern[0])];
  bucket.push_back(entries_.size() - 1);
  std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
    return entries_[a].pattern.size() > entries_[b].pattern.size();
  });
}

bool AddedTokenSplitter::is_single_word(std::string_view text, size_t start, size_t stop) {
  return !ends_with_word(text.substr(0, start)) && !starts_with_word(text.substr(stop));
}

const AddedTokenSplitter::Entry* AddedTokenSplitter::next_match(std::string_view text, size_t from,
                                                                size_t& position) const {
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

}  // namespace focusvla::bpe
