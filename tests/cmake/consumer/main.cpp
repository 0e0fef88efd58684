// Reads a checkpoint's config through the installed library.
#include <cstdio>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/version.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    const auto config = focusvla::io::VlaConfig::load(argv[1]);
    std::printf("focusvla %s: %lld LLM layers\n", focusvla::kVersion, (long long)config.text_config.num_hidden_layers);
  } catch (const focusvla::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
