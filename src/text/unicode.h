#pragma once
// Unicode for the tokenizer (private to src/text/): the tables that bridge Unicode versions, the
// character classes the added tokens need, and NFC as HF computes it.
//
// Two Unicode-version bridges keep us bit-exact with tokenizers 0.23 (verified over every code
// point by the oracle in tests/python/gen_text.py):
// - The pre-tokenizer regex is written for Oniguruma (Unicode 16 tables, `\s` = Unicode
//   White_Space). PCRE2 10.42 ships Unicode 14 and counts U+180E as `\s`. Before compiling we
//   rewrite `\p{L}`, `\p{N}`, `\s`, `\S` into explicit classes: PCRE2's `\p{L}` / `\p{N}` plus the
//   letters / digits Unicode 15 and 16 added, and the White_Space list for `\s`
//   (pre_tokenizer.cpp).
// - NFC: HF's normalizer (unicode-normalization-alignments) predates Unicode 11 and treats the
//   combining marks added since as plain starters; utf8proc 2.8 knows them. We normalize the
//   runs between such code points separately, which reproduces HF's result (hf_nfc).

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace focusvla::bpe {

struct CodeRange {
  char32_t first;
  char32_t last;
};

// Letters (\p{L}) assigned in Unicode 15.0 and 16.0, which Oniguruma in tokenizers 0.23 knows.
inline constexpr CodeRange kLettersAfterUnicode14[] = {
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
inline constexpr CodeRange kNumbersAfterUnicode14[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x11F50, 0x11F59},
    {0x16130, 0x16139}, {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3},
    {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
};

// Unicode White_Space: what Oniguruma's `\s` and Rust regex's `\s` match.
inline constexpr CodeRange kWhiteSpace[] = {
    {0x09, 0x0D},     {0x20, 0x20},     {0x85, 0x85},     {0xA0, 0xA0},     {0x1680, 0x1680},
    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

// Code points HF's NFC treats as starters that compose with nothing, while utf8proc knows them
// as combining marks (Unicode 11+), plus U+11930, which utf8proc composes after U+11935.
inline constexpr CodeRange kOpaqueToHfNfc[] = {
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

// Unicode White_Space (the tokenizer's `\s`).
bool is_white_space(char32_t cp);

// Rust regex `\w` (used by HF for single_word added tokens), from utf8proc's categories.
bool is_word_char(char32_t cp);

// Below U+0300 nothing decomposes or combines, so such text is its own NFC.
bool nfc_trivially(std::string_view text);

// NFC of valid UTF-8 `text` as HF's normalizer computes it (see above). Throws Error when
// utf8proc fails.
std::string hf_nfc(std::string_view text);

}  // namespace focusvla::bpe
