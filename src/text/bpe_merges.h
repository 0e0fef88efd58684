#pragma once
// BPE merges of the tokenizer (private to src/text/): (left id, right id) -> (rank, merged id),
// in an open-addressing table, and the two ways of applying them to a piece.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace focusvla::bpe {

struct MergeRule {
  int32_t rank;
  int32_t merged;
};

class MergeTable {
 public:
  void reserve(size_t count) {
    size_t capacity = 16;
    while (capacity < 2 * count) capacity *= 2;
    keys_.assign(capacity, kEmpty);
    rules_.assign(capacity, MergeRule{0, 0});
    mask_ = capacity - 1;
  }

  // A later rule for the same pair replaces the earlier one, as in HF.
  void insert(int32_t left, int32_t right, MergeRule rule) {
    const uint64_t key = pack(left, right);
    size_t slot = home(key);
    while (keys_[slot] != kEmpty && keys_[slot] != key) slot = (slot + 1) & mask_;
    keys_[slot] = key;
    rules_[slot] = rule;
  }

  const MergeRule* find(int32_t left, int32_t right) const {
    if (keys_.empty()) return nullptr;
    const uint64_t key = pack(left, right);
    for (size_t slot = home(key);; slot = (slot + 1) & mask_) {
      if (keys_[slot] == key) return &rules_[slot];
      if (keys_[slot] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  size_t home(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
  }

  std::vector<uint64_t> keys_;
  std::vector<MergeRule> rules_;
  size_t mask_ = 0;
};

// Pieces up to this many bytes are merged by a linear scan, longer ones with a heap.
constexpr size_t kLinearMergeLimit = 64;

// Merges `ids` in place: the pair of lowest rank first, the leftmost one on ties. A linear scan
// over the pair ranks; good for the short pieces that make up almost all text.
void merge_linear(const MergeTable& merges, std::vector<int32_t>& ids);

// The same merge order with a priority queue over (rank, position), as HF's Word::merge_all;
// for long pieces (a paragraph of CJK text is a single piece).
void merge_with_heap(const MergeTable& merges, std::vector<int32_t>& ids);

}  // namespace focusvla::bpe
