#pragma once
// The heap policy of a process that runs policies (glibc malloc).
//
// glibc serves an allocation above its mmap threshold (at most 32 MB) with a fresh mmap and
// unmaps it on free, so every large tensor of an act (10 - 100 MB at batch 8: the decoder's
// gate/up output, the encoders' MLP activations) is new memory whose pages the kernel zero-fills
// on first touch, call after call. use_heap_for_large_allocations() makes malloc take every
// allocation from its heap (M_MMAP_MAX 0) and keep freed memory for the next call
// (M_TRIM_THRESHOLD at its maximum): the process then holds its high-water mark, as jemalloc or
// tcmalloc would. Measured (docs/SPEED.md, "The heap"): batch 8 bf16 12.4 -> 10.4 s, int8
// 10.0 -> 8.9 s; batch 1 int8 1.18 -> 1.12 s; peak RSS +0.05 GB (int8) / +0.14 GB (bf16).
//
// Process-wide, so the library never calls it by itself: the `focusvla` tool (act, serve,
// explain) does at start; a program that embeds the library chooses (or sets
// GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647).

namespace focusvla {

// Returns false and changes nothing where malloc is not glibc's or GLIBC_TUNABLES is set (the
// user's own tuning wins).
bool use_heap_for_large_allocations();

}  // namespace focusvla
