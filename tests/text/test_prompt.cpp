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
#include "test_util.h"

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
  focusvla::testing::expect_error([] { focusvla::lowercase("ok\xC3"); },
                                  {"invalid UTF-8 at byte offset 2"});
  // After a capital sigma (whose context is looked at both ways), a surrogate, an overlong form.
  focusvla::testing::expect_error([] { focusvla::lowercase("\xCE\xA3\xFF"); },
                                  {"invalid UTF-8 at byte offset 2"});
  focusvla::testing::expect_error([] { focusvla::lowercase("A\xCE\xA3\xED\xA0\x80"); },
                                  {"invalid UTF-8 at byte offset 3"});
  focusvla::testing::expect_error([] { focusvla::lowercase("\xC0\x80"); },
                                  {"invalid UTF-8 at byte offset 0"});
}

// Bytes of the well-formed sequence (Unicode ch. 3, table 3-7) at the start of `s`, 0 if none.
size_t well_formed_length(const std::string& s) {
  const auto byte = [&](size_t i) { return i < s.size() ? static_cast<unsigned char>(s[i]) : 0x100u; };
  const auto in = [](unsigned v, unsigned low, unsigned high) { return v >= low && v <= high; };
  const unsigned b0 = byte(0), b1 = byte(1), b2 = byte(2), b3 = byte(3);
  if (b0 < 0x80) return 1;
  if (in(b0, 0xC2, 0xDF)) return in(b1, 0x80, 0xBF) ? 2 : 0;
  if (in(b0, 0xE0, 0xEF)) {
    const unsigned low = b0 == 0xE0 ? 0xA0 : 0x80, high = b0 == 0xED ? 0x9F : 0xBF;
    return in(b1, low, high) && in(b2, 0x80, 0xBF) ? 3 : 0;
  }
  if (in(b0, 0xF0, 0xF4)) {
    const unsigned low = b0 == 0xF0 ? 0x90 : 0x80, high = b0 == 0xF4 ? 0x8F : 0xBF;
    return in(b1, low, high) && in(b2, 0x80, 0xBF) && in(b3, 0x80, 0xBF) ? 4 : 0;
  }
  return 0;
}

// lowercase() accepts exactly well-formed UTF-8 and names the offset of the first ill-formed
// sequence: every byte pair, and every 3- and 4-byte lead with every second byte, after a
// non-ASCII prefix (so that the fast ASCII path is not taken).
TEST(PromptLowercase, InvalidUtf8SweepFollowsUnicodeTable37) {
  const std::string prefix = "\xCE\xA3";  // U+03A3
  size_t checked = 0;
  const auto expect = [&](const std::string& tail) {
    size_t offset = 0;
    while (offset < tail.size()) {
      const size_t length = well_formed_length(tail.substr(offset));
      if (length == 0) break;
      offset += length;
    }
    const std::string text = prefix + tail;
    if (offset >= tail.size()) {
      EXPECT_NO_THROW(focusvla::lowercase(text)) << ::testing::PrintToString(tail);
    } else {
      focusvla::testing::expect_error(
          [&] { focusvla::lowercase(text); },
          {"lowercase: invalid UTF-8 at byte offset " + std::to_string(prefix.size() + offset)});
    }
    ++checked;
  };
  for (int b0 = 0; b0 < 256; ++b0) {
    for (int b1 = 0; b1 < 256; ++b1) {
      const std::string pair{static_cast<char>(b0), static_cast<char>(b1)};
      expect(pair);
      if (b0 < 0xE0 || b0 > 0xF4) continue;
      for (const char b2 : {'\x41', '\x80', '\xBF', '\xC0'}) {
        expect(pair + b2);
        if (b0 >= 0xF0) {
          for (const char b3 : {'\x41', '\x80', '\xBF', '\xC0'}) expect(pair + b2 + b3);
        }
      }
    }
  }
  EXPECT_EQ(checked, 65536u + 21u * 256u * 4u + 5u * 256u * 16u);
}

// Two readable examples; the exhaustive comparisons with Python follow.
TEST(PromptLowercase, SpecialCasingAndFinalSigma) {
  EXPECT_EQ(focusvla::lowercase("\xC4\xB0"), "i\xCC\x87");  // U+0130 -> U+0069 U+0307
  // ΣΑΣ ΣΑΣ. -> σας σας.
  EXPECT_EQ(focusvla::lowercase("\xCE\xA3\xCE\x91\xCE\xA3 \xCE\xA3\xCE\x91\xCE\xA3."),
            "\xCF\x83\xCE\xB1\xCF\x82 \xCF\x83\xCE\xB1\xCF\x82.");
}

// lowercase_cases.json (gen_text.py): groups of [text, text.lower()], or [text] when Python leaves
// the text unchanged.
const json& lowercase_oracle() {
  static const json oracle = [] {
    std::ifstream in(focusvla::testing::data_path("text", "lowercase_cases.json"));
    return in ? json::parse(in) : json::object();
  }();
  return oracle;
}

void expect_lowercase_like_python(const std::string& group, size_t min_cases) {
  const json& oracle = lowercase_oracle();
  ASSERT_TRUE(oracle.contains("groups") && oracle.at("groups").contains(group))
      << "lowercase_cases.json has no group " << group;
  const json& cases = oracle.at("groups").at(group);
  ASSERT_GE(cases.size(), min_cases) << group;
  const auto show = [](const std::string& s) {
    return json(s).dump(-1, ' ', true, json::error_handler_t::replace);
  };
  size_t failures = 0;
  for (const json& item : cases) {
    const std::string text = item[0].get<std::string>();
    const std::string expected = item.size() > 1 ? item[1].get<std::string>() : text;
    std::string got;
    try {
      got = focusvla::lowercase(text);
    } catch (const std::exception& e) {
      got = std::string("<threw: ") + e.what() + ">";
    }
    if (got != expected && ++failures <= 10) {
      ADD_FAILURE() << group << ": lowercase(" << show(text) << ") = " << show(got)
                    << ", Python's str.lower() gives " << show(expected);
    }
  }
  EXPECT_EQ(failures, 0u) << "cases of group " << group
                          << " that differ from Python (first 10 shown)";
}

// Every code point whose str.lower() differs from itself (1433 in Unicode 14), alone.
TEST(PromptLowercase, EveryMappedCodePointLikePython) {
  expect_lowercase_like_python("mapped", 1400);
}

// The same code points between letters, doubled, before a combining mark and around a sigma.
TEST(PromptLowercase, EveryMappedCodePointInContextLikePython) {
  expect_lowercase_like_python("mapped_in_context", 1400);
}

// U+03A3 after / before cased letters, Case_Ignorable ones, neither, other sigmas, U+0130.
TEST(PromptLowercase, FinalSigmaLikePython) { expect_lowercase_like_python("final_sigma", 3000); }

// The Cased and Case_Ignorable tables: each code point before, after and between a letter and
// a sigma.
TEST(PromptLowercase, CasedAndCaseIgnorableLikePython) {
  expect_lowercase_like_python("properties", 20000);
}

// All of U+0000..U+10FFFF but surrogates, 256 code points a case.
TEST(PromptLowercase, EveryCodePointLikePython) { expect_lowercase_like_python("sweep", 4300); }

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
