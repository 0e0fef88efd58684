// use_heap_for_large_allocations (core/heap.h): after it, a 256 MB allocation comes from malloc's
// heap (no mapped chunk, as glibc's mallinfo2 counts them; glibc maps any block above 32 MB by
// default) and its memory is reused by the next one of that size. With GLIBC_TUNABLES set it
// changes nothing.

#include <gtest/gtest.h>

#include <cstdlib>

#include "focusvla/core/heap.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace {

#ifdef __GLIBC__
// How many mapped chunks malloc adds to serve a block of `bytes` (mallinfo2's count, read around
// the one call; the block is not touched, so it costs no memory).
size_t chunks_mapped_for(size_t bytes) {
  const size_t before = mallinfo2().hblks;
  void* block = std::malloc(bytes);
  EXPECT_NE(block, nullptr);
  const size_t after = mallinfo2().hblks;
  std::free(block);
  return after - before;
}

TEST(Heap, LargeAllocationsComeFromTheHeapAfterwards) {
  constexpr size_t kLarge = size_t{256} << 20;  // far above glibc's largest mmap threshold (32 MB)
  if (std::getenv("GLIBC_TUNABLES") != nullptr) {
    EXPECT_FALSE(focusvla::use_heap_for_large_allocations());
    GTEST_SKIP() << "GLIBC_TUNABLES is set: the user's tuning wins";
  }
  ASSERT_TRUE(focusvla::use_heap_for_large_allocations());
  EXPECT_EQ(chunks_mapped_for(kLarge), 0u);
  // Freed memory stays with the heap: the next block of that size reuses it.
  void* first = std::malloc(kLarge);
  std::free(first);
  void* second = std::malloc(kLarge);
  EXPECT_EQ(first, second);
  std::free(second);
}
#endif

}  // namespace
