#pragma once
// bf16 <-> float by their bits, the clones macro and the parallel grain for the CPU loops of src/nn/
// (quantize.cpp, rotary.cpp, rms_norm.cpp): branch free, so that the compiler vectorizes them; rounding as c10::BFloat16
// (nearest even, NaN kept). Internal to src/nn/.
#include <cstdint>
#include <cstring>

// A loop function compiled for AVX512 and AVX2 besides the baseline (GCC function multiversioning:
// the loader picks the clone this CPU runs).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FOCUSVLA_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define FOCUSVLA_CPU_CLONES
#endif

namespace focusvla::nn::bits {

inline float bf16_to_float(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}

// The float value of a float or of bf16 bits (for loops templated over both).
inline float to_float(float v) { return v; }
inline float to_float(uint16_t bits) { return bf16_to_float(bits); }

// Rows per parallel task for rows of `row_elements`: at least ~16k elements.
inline int64_t grain(int64_t row_elements) {
  return row_elements >= 16384 ? 1 : 16384 / (row_elements > 0 ? row_elements : 1);
}

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

}  // namespace focusvla::nn::bits
