#include "focusvla/text/prompt.h"

#include <utf8proc.h>

#include "focusvla/core/error.h"

namespace focusvla {
namespace {

constexpr const char* kOpenVlaPrefix = "In: What action should the robot take to ";
constexpr const char* kOpenVlaSuffix = "?\nOut:";
constexpr const char* kQwenChatPrefix =
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\nWhat action should the robot take to ";
constexpr const char* kQwenChatSuffix = "?<|im_end|>\n<|im_start|>assistant\n";

char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

PromptFormat parse_prompt_format(const std::string& name) {
  if (name == "openvla") return PromptFormat::openvla;
  if (name == "qwen-chat") return PromptFormat::qwen_chat;
  throw Error("prompt format '" + name + "': unknown (accepted: openvla, qwen-chat)");
}

std::string to_string(PromptFormat format) {
  return format == PromptFormat::openvla ? "openvla" : "qwen-chat";
}

std::string lowercase(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      out += ascii_lower(text[i++]);
      continue;
    }
    utf8proc_int32_t cp = -1;
    const utf8proc_ssize_t length =
        utf8proc_iterate(bytes + i, static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
    if (length <= 0 || cp < 0) {
      throw Error("lowercase: invalid UTF-8 at byte offset " + std::to_string(i));
    }
    utf8proc_uint8_t encoded[4];
    const utf8proc_ssize_t n = utf8proc_encode_char(utf8proc_tolower(cp), encoded);
    out.append(reinterpret_cast<const char*>(encoded), static_cast<size_t>(n));
    i += static_cast<size_t>(length);
  }
  return out;
}

std::string build_prompt(PromptFormat format, const std::string& task) {
  const std::string lowered = lowercase(task);
  if (format == PromptFormat::openvla) return kOpenVlaPrefix + lowered + kOpenVlaSuffix;
  return kQwenChatPrefix + lowered + kQwenChatSuffix;
}

}  // namespace focusvla
