// The GPT-2 byte-level alphabet (see byte_level.h).

#include "byte_level.h"

#include "utf8.h"

namespace focusvla::bpe {

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet alphabet = [] {
    ByteLevelAlphabet a;
    a.byte_of_symbol.fill(-1);
    char32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next_extra++;
      utf8::append(cp, a.symbol_of_byte[b]);
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

void append_token_bytes(const std::string& token, std::string& out) {
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  std::string bytes;
  bool all_mapped = true;
  utf8::for_each_code_point(token, [&](char32_t cp, size_t, size_t) {
    const int b = cp < alphabet.byte_of_symbol.size() ? alphabet.byte_of_symbol[cp] : -1;
    if (b < 0) all_mapped = false;
    if (all_mapped) bytes += static_cast<char>(b);
  });
  out += all_mapped ? bytes : token;
}

}  // namespace focusvla::bpe
