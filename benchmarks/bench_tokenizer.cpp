// Tokenizer throughput on 10,000 robot instructions (Google Benchmark).
//
//   FOCUSVLA_ASSETS=/path/to/assets bench_tokenizer [--benchmark_format=json]
//
// The tokenizer comes from $FOCUSVLA_ASSETS/qwen2.5-tokenizer. The instructions are generated
// here (seeded), or read from $FOCUSVLA_BENCH_INSTRUCTIONS (a JSON array of strings), which is
// how benchmarks/bench_tokenizer_hf.py times HF tokenizers on the very same strings.
// items_per_second counts instructions.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "focusvla/text/bpe_tokenizer.h"
#include "focusvla/text/prompt.h"

namespace {

constexpr size_t kInstructionCount = 10000;

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    std::cerr << "bench_tokenizer: set " << name << "\n";
    std::exit(2);
  }
  return value;
}

// LIBERO-style instructions from a small grammar, with a fixed-seed LCG.
std::vector<std::string> generate_instructions(size_t count) {
  const std::vector<std::string> verbs = {"put",  "place", "pick up", "open",  "close", "turn on",
                                          "push", "move",  "stack",   "slide", "lift",  "pour"};
  const std::vector<std::string> objects = {
      "the black bowl",  "the alphabet soup", "the cream cheese",
      "the ketchup",     "the butter",        "the top drawer of the cabinet",
      "the stove",       "the microwave",     "the red mug",
      "the wine bottle", "the frying pan",    "the moka pot",
      "the book",        "the 2nd plate"};
  const std::vector<std::string> places = {"on the plate",           "in the basket",
                                           "on top of the cabinet",  "into the drawer",
                                           "on the stove",           "to the left of the plate",
                                           "next to the cookie box", "in the tray"};
  uint64_t state = 0x2545F4914F6CDD1Dull;
  auto pick = [&state](const std::vector<std::string>& words) -> const std::string& {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return words[(state >> 33) % words.size()];
  };
  std::vector<std::string> instructions;
  instructions.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    std::string text = pick(verbs) + " " + pick(objects) + " " + pick(places);
    if (i % 5 == 0) text += " and " + pick(verbs) + " " + pick(objects);
    instructions.push_back(std::move(text));
  }
  return instructions;
}

const std::vector<std::string>& instructions() {
  static const std::vector<std::string> texts = [] {
    const char* path = std::getenv("FOCUSVLA_BENCH_INSTRUCTIONS");
    if (path == nullptr || *path == '\0') return generate_instructions(kInstructionCount);
    std::ifstream in(path);
    if (!in) {
      std::cerr << "bench_tokenizer: cannot open " << path << "\n";
      std::exit(2);
    }
    return nlohmann::json::parse(in).get<std::vector<std::string>>();
  }();
  return texts;
}

focusvla::BpeTokenizer& tokenizer() {
  static focusvla::BpeTokenizer instance = focusvla::BpeTokenizer::from_directory(
      required_env("FOCUSVLA_ASSETS") + "/qwen2.5-tokenizer");
  return instance;
}

size_t encode_all(const focusvla::BpeTokenizer& tok, const std::vector<std::string>& texts) {
  size_t ids = 0;
  for (const std::string& text : texts) {
    const std::vector<int32_t> encoded = tok.encode(text);
    ids += encoded.size();
    benchmark::DoNotOptimize(encoded.data());
  }
  return ids;
}

void finish(benchmark::State& state, size_t ids_per_pass) {
  const auto count = static_cast<int64_t>(instructions().size());
  state.SetItemsProcessed(state.iterations() * count);
  state.counters["instructions"] = static_cast<double>(count);
  state.counters["ids_per_instruction"] = static_cast<double>(ids_per_pass) / count;
}

// Every piece already in the word cache (the steady state of a robot repeating its tasks).
void BM_EncodeWarmCache(benchmark::State& state) {
  focusvla::BpeTokenizer& tok = tokenizer();
  tok.set_cache_capacity(65536);
  size_t ids = encode_all(tok, instructions());
  for (auto _ : state) ids = encode_all(tok, instructions());
  finish(state, ids);
}

// The cache emptied before each pass of 10,000 (later repeats of a word hit it).
void BM_EncodeColdCache(benchmark::State& state) {
  focusvla::BpeTokenizer& tok = tokenizer();
  tok.set_cache_capacity(65536);
  size_t ids = 0;
  for (auto _ : state) {
    state.PauseTiming();
    tok.clear_cache();
    state.ResumeTiming();
    ids = encode_all(tok, instructions());
  }
  finish(state, ids);
}

// No cache at all: every piece goes through the BPE merges.
void BM_EncodeNoCache(benchmark::State& state) {
  focusvla::BpeTokenizer& tok = tokenizer();
  tok.set_cache_capacity(0);
  size_t ids = 0;
  for (auto _ : state) ids = encode_all(tok, instructions());
  tok.set_cache_capacity(65536);
  finish(state, ids);
}

// What inference does per request: qwen-chat prompt, then encode (warm cache).
void BM_PromptAndEncodeQwenChat(benchmark::State& state) {
  focusvla::BpeTokenizer& tok = tokenizer();
  tok.set_cache_capacity(65536);
  size_t ids = 0;
  for (auto _ : state) {
    ids = 0;
    for (const std::string& text : instructions()) {
      const std::vector<int32_t> encoded =
          tok.encode(focusvla::build_prompt(focusvla::PromptFormat::qwen_chat, text));
      ids += encoded.size();
      benchmark::DoNotOptimize(encoded.data());
    }
  }
  finish(state, ids);
}

BENCHMARK(BM_EncodeWarmCache)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeColdCache)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeNoCache)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_PromptAndEncodeQwenChat)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
