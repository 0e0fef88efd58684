#pragma once
// Prompt templates around a task instruction (SPEC section 6). The task is lower-cased first,
// exactly as the reference does with Python's `task_label.lower()`.

#include <string>

namespace focusvla {

enum class PromptFormat {
  openvla,    // "In: What action should the robot take to {task}?\nOut:"
  qwen_chat,  // Qwen chat template with the default system message (released LIBERO-Pro models)
};

// "openvla" or "qwen-chat"; throws Error naming the accepted spellings otherwise.
PromptFormat parse_prompt_format(const std::string& name);

// The spelling parse_prompt_format accepts.
std::string to_string(PromptFormat format);

// Lower-cases UTF-8 text exactly as Python's str.lower() of the reference Python (SPEC section 6;
// Unicode 14.0, Python 3.11): the full lowercase mapping, so U+0130 becomes U+0069 U+0307, and
// the Final_Sigma rule, so U+03A3 becomes U+03C2 after a cased letter that no cased letter
// follows (Case_Ignorable code points skipped both ways) and U+03C3 otherwise. The tables are
// generated from that Python by scripts/gen_unicode_lower.py. Throws Error ("invalid UTF-8 at
// byte offset N") on invalid UTF-8; ASCII-only text takes a fast path.
std::string lowercase(const std::string& text);

// The byte offset of the first ill-formed UTF-8 sequence in `text`, or std::string::npos when it
// is all well-formed (the rules of lowercase() and the tokenizer).
size_t invalid_utf8_offset(const std::string& text);

// The prompt for `task` (lower-cased) in `format`. Tokenize it with no BOS/EOS added.
std::string build_prompt(PromptFormat format, const std::string& task);

}  // namespace focusvla
