#pragma once
// The tokenizer's added tokens (private to src/text/): cut out of the text before the
// pre-tokenizer, as HF's AddedVocabulary does.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace focusvla::bpe {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// Offset where the white space at the end of `text` (valid UTF-8) begins.
size_t trailing_space_start(std::string_view text);

// Length of the white space at the start of `text` (valid UTF-8).
size_t leading_space_length(std::string_view text);

// Leftmost-longest, non-overlapping matching of a set of added tokens (a daachorse
// LeftmostLongest automaton in HF; the sets are small, so a first-byte index suffices).
class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;

  // `pattern` is what `token` matches (its content, or its normalized content).
  void add(const AddedToken& token, const std::string& pattern);

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

  static bool is_single_word(std::string_view text, size_t start, size_t stop);

  // The leftmost (then longest) token occurrence at or after `from`.
  const Entry* next_match(std::string_view text, size_t from, size_t& position) const;

  std::vector<Entry> entries_;
  std::array<std::vector<size_t>, 256> by_first_byte_;
};

}  // namespace focusvla::bpe
