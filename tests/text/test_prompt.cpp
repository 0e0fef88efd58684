// Prompt templates (SPEC section 6) against the Python oracle of tests/python/gen_text.py.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/text/bpe_tokenizer.h"
#include "focusvla/text/prompt.h"

namespace {

namespace fs = std::filesystem;
using focusvla::build_prompt;
using focusvla::PromptFormat;
using nlohmann::json;

fs::path env_dir(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string("environment variable ") + name + " is not set");
  }
  return fs::path(value);
}

json prompt_oracle() {
  const fs::path path = env_dir("FOCUSVLA_TEST_DATA") / "text" / "prompt_cases.json";
  std::ifstream in(path);
  if (!in) {
    throw std::runtime_error("missing oracle file " + path.string() +
                             "; generate it with: python tests/python/gen_text.py "
                             "$FOCUSVLA_TEST_DATA $FOCUSVLA_ASSETS");
  }
  return json::parse(in);
}

TEST(PromptParsing, AcceptsBothNames) {
  EXPECT_EQ(focusvla::parse_prompt_format("openvla"), PromptFormat::openvla);
  EXPECT_EQ(focusvla::parse_prompt_format("qwen-chat"), PromptFormat::qwen_chat);
  EXPECT_EQ(focusvla::to_string(PromptFormat::openvla), "openvla");
  EXPECT_EQ(focusvla::to_string(PromptFormat::qwen_chat), "qwen-chat");
}

TEST(PromptParsing, RejectsUnknownNameListingTheAcceptedOnes) {
  try {
    focusvla::parse_prompt_format("qwen_chat");
    FAIL() << "expected focusvla::Error";
  } catch (const focusvla::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("qwen_chat"), std::string::npos) << message;
    EXPECT_NE(message.find("openvla, qwen-chat"), std::string::npos) << message;
  }
}

TEST(PromptTemplates, OpenVlaIsExact) {
  EXPECT_EQ(build_prompt(PromptFormat::openvla, "Put the Bowl on the PLATE"),
            "In: What action should the robot take to put the bowl on the plate?\nOut:");
}

TEST(PromptTemplates, QwenChatIsExact) {
  EXPECT_EQ(build_prompt(PromptFormat::qwen_chat, "Open the drawer"),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nWhat action should the robot take to open "
            "the drawer?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(PromptLowercase, AsciiLikePython) {
  EXPECT_EQ(focusvla::lowercase("ABC xyz 123 !@# [Z]"), "abc xyz 123 !@# [z]");
}

TEST(PromptLowercase, NonAsciiPerCodePoint) {
  const std::string upper = u8"\u00C9CRASER \u00C6\u00D8\u00C5";  // ÉCRASER ÆØÅ
  EXPECT_EQ(focusvla::lowercase(upper), u8"\u00E9craser \u00E6\u00F8\u00E5");
  EXPECT_EQ(focusvla::lowercase("\xD0\x9F\xD0\xA0\xD0\x98"), "\xD0\xBF\xD1\x80\xD0\xB8");  // ПРИ
  EXPECT_EQ(focusvla::lowercase("\xE6\x8A\x8A \xF0\x9F\xA4\x96"), "\xE6\x8A\x8A \xF0\x9F\xA4\x96");
}

TEST(PromptLowercase, InvalidUtf8Throws) {
  EXPECT_THROW(focusvla::lowercase("ok\xC3"), focusvla::Error);
  EXPECT_THROW(build_prompt(PromptFormat::openvla, "\xFF"), focusvla::Error);
}

TEST(PromptOracle, MatchesPythonTemplatesAndTokenIds) {
  const json cases = prompt_oracle();
  ASSERT_GE(cases.size(), 20u);
  const auto tokenizer = focusvla::BpeTokenizer::from_directory(
      (env_dir("FOCUSVLA_ASSETS") / "qwen2.5-tokenizer").string());
  for (const json& item : cases) {
    const std::string task = item["task"].get<std::string>();
    const PromptFormat format = focusvla::parse_prompt_format(item["format"].get<std::string>());
    const std::string prompt = build_prompt(format, task);
    EXPECT_EQ(prompt, item["prompt"].get<std::string>()) << "task " << json(task).dump();
    EXPECT_EQ(tokenizer.encode(prompt), item["ids"].get<std::vector<int32_t>>())
        << "task " << json(task).dump();
  }
}

}  // namespace
