// The options' text forms (policy/option_text.h), shared by the CLI, the C ABI, Python and Ray:
// every listed spelling parses, aliases resolve to one canonical name, errors name the option as
// the front end spells it and list what is accepted.

#include <gtest/gtest.h>

#include "focusvla/policy/option_text.h"
#include "test_util.h"

namespace focusvla {
namespace {

using testing::expect_error;

TEST(OptionText, EverySpellingParses) {
  for (const char* option : {"dtype", "quantize", "cpu_bf16_matmul", "prompt_format", "normalization"})
    for (const auto& text : option_spellings(option))
      EXPECT_NO_THROW(canonical_option(option, text, option)) << option << " " << text;
  for (const char* device : {"auto", "cpu", "cuda", "cuda:0", "cuda:12"})
    EXPECT_EQ(canonical_option("device", device, "device"), device);
}

TEST(OptionText, AliasesAreOneName) {
  for (const char* text : {"float32", "fp32", "float", "torch.float32"})
    EXPECT_EQ(canonical_option("dtype", text, "dtype"), "float32") << text;
  for (const char* text : {"bfloat16", "bf16", "torch.bfloat16"})
    EXPECT_EQ(canonical_option("dtype", text, "dtype"), "bfloat16") << text;
  for (const char* text : {"float16", "fp16", "half"}) EXPECT_EQ(canonical_option("dtype", text, "dtype"), "float16");
  for (const char* text : {"auto", "none", ""}) EXPECT_EQ(canonical_option("dtype", text, "dtype"), "auto");
  EXPECT_EQ(parse_dtype("bf16", "dtype"), torch::kBFloat16);
  EXPECT_FALSE(parse_dtype("auto", "dtype").has_value());
  EXPECT_EQ(canonical_option("quantize", "w8a8", "q"), "int8");
  EXPECT_EQ(canonical_option("quantize", "e4m3", "q"), "fp8");
  EXPECT_EQ(canonical_option("quantize", "off", "q"), "none");
  EXPECT_EQ(parse_cpu_bf16_matmul("native", "m"), nn::CpuBf16Matmul::kNative);
  EXPECT_EQ(parse_device("cpu", "--device"), torch::Device(torch::kCPU));
}

TEST(OptionText, ErrorsNameTheOptionAndTheSpellings) {
  expect_error([] { parse_dtype("int8", "--dtype"); }, {"--dtype 'int8'", "bfloat16", "bf16"});
  expect_error([] { canonical_option("device", "tpu", "options.device"); }, {"options.device 'tpu'", "cuda:N"});
  expect_error([] { canonical_option("device", "cuda:x", "device"); }, {"device 'cuda:x'"});
  expect_error([] { parse_device("tpu", "--device"); }, {"--device 'tpu'", "cpu"});
  expect_error([] { check_prompt_format("chatml", "prompt_format"); }, {"prompt_format 'chatml'", "qwen-chat"});
  expect_error([] { check_normalization("q99", "options.normalization"); }, {"options.normalization 'q99'", "bounds_q99"});
  expect_error([] { parse_cpu_bf16_matmul("fast", "cpu_bf16_matmul"); }, {"cpu_bf16_matmul 'fast'", "native"});
  expect_error([] { parse_quantize("int4", "--quantize"); }, {"--quantize 'int4'", "int8"});
  expect_error([] { canonical_option("colour", "red", "x"); }, {"colour"});
  if (!torch::cuda::is_available())
    expect_error([] { parse_device("cuda", "--device"); }, {"--device 'cuda'", "no CUDA device"});
}

}  // namespace
}  // namespace focusvla
