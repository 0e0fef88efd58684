#pragma once
// Prompt templates around a task instruction (SPEC section 6). The task is lower-cased first,
// as the reference does with `task_label.lower()`.

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

// Lower-cases UTF-8 text: ASCII as Python's str.lower(), other code points with utf8proc's
// simple lowercase mapping. Throws Error on invalid UTF-8.
std::string lowercase(const std::string& text);

// The prompt for `task` (lower-cased) in `format`. Tokenize it with no BOS/EOS added.
std::string build_prompt(PromptFormat format, const std::string& task);

}  // namespace focusvla
