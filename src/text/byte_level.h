#pragma once
// The GPT-2 byte-level alphabet of the tokenizer (private to src/text/): every byte is shown as a
// printable code point, and HF's ByteLevel decoder maps tokens back to bytes.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace focusvla::bpe {

struct ByteLevelAlphabet {
  std::array<std::string, 256> symbol_of_byte;  // UTF-8 of the code point for each byte
  std::array<int16_t, 324> byte_of_symbol;      // inverse, -1 where none
};

const ByteLevelAlphabet& byte_level_alphabet();

// `bytes` spelled in the alphabet.
std::string to_byte_level(std::string_view bytes);

// HF's ByteLevel decoder on one token: its symbols as bytes, or its UTF-8 as is when one of
// its code points is outside the alphabet.
void append_token_bytes(const std::string& token, std::string& out);

}  // namespace focusvla::bpe
