#pragma once
// UTF-8 for the text module (private: src/text/): one decoder and one encoder, shared by the
// tokenizer (bpe_tokenizer.cpp and its parts) and lowercase() (prompt.cpp).
//
// decode() accepts exactly the well-formed sequences of Unicode ch. 3 (table 3-7): no overlong
// forms, no surrogates, nothing above U+10FFFF. On an ill-formed sequence it reports the length
// of its maximal subpart (at least 1 byte), the unit of U+FFFD substitution that Rust's
// String::from_utf8_lossy and HF tokenizers use. Header-only: the tokenizer's hot loops inline it.

#include <cstddef>
#include <string>
#include <string_view>

namespace focusvla::utf8 {

// The code point at the start of a byte range.
struct Decoded {
  char32_t code_point;  // when !valid: U+FFFD
  size_t length;        // bytes of the sequence, or of its maximal ill-formed subpart (>= 1)
  bool valid;
};

// Decodes the code point at `s`; `available` (>= 1) bytes may be read.
inline Decoded decode(const unsigned char* s, size_t available) {
  const unsigned char lead = s[0];
  if (lead < 0x80) return {lead, 1, true};
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
    return {0xFFFD, 1, false};
  }
  char32_t cp = lead & (0xFF >> (continuation + 2));
  for (size_t i = 1; i <= continuation; ++i) {
    if (i >= available || s[i] < low || s[i] > high) return {0xFFFD, i, false};
    low = 0x80;
    high = 0xBF;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  return {cp, continuation + 1, true};
}

// Decodes the code point at byte `offset` (< text.size()) of `text`.
inline Decoded decode(std::string_view text, size_t offset) {
  return decode(reinterpret_cast<const unsigned char*>(text.data()) + offset, text.size() - offset);
}

// Byte offset of the first ill-formed sequence of `text`, or npos when it is all valid UTF-8.
inline size_t find_invalid(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const Decoded d = decode(text, i);
    if (!d.valid) return i;
    i += d.length;
  }
  return std::string_view::npos;
}

// Appends the UTF-8 encoding of `cp` (at most U+10FFFF) to `out`.
inline void append(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    const char bytes[] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    out.append(bytes, 2);
  } else if (cp < 0x10000) {
    const char bytes[] = {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                          static_cast<char>(0x80 | (cp & 0x3F))};
    out.append(bytes, 3);
  } else if (cp < 0x110000) {
    const char bytes[] = {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                          static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    out.append(bytes, 4);
  }
}

// Calls visit(code_point, offset, length) for each code point of valid UTF-8 `text`.
template <class Visit>
void for_each_code_point(std::string_view text, Visit&& visit) {
  for (size_t i = 0; i < text.size();) {
    const Decoded d = decode(text, i);
    visit(d.code_point, i, d.length);
    i += d.length;
  }
}

// What Rust's String::from_utf8_lossy does: each maximal ill-formed subpart becomes U+FFFD.
inline std::string lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const Decoded d = decode(bytes, i);
    if (d.valid) {
      out.append(bytes, i, d.length);
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += d.length;
  }
  return out;
}

}  // namespace focusvla::utf8
