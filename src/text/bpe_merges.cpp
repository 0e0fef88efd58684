// BPE merges of the tokenizer (see bpe_merges.h).

#include "bpe_merges.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <functional>
#include <queue>

namespace focusvla::bpe {
namespace {

constexpr int32_t kNoMerge = INT32_MAX;

}  // namespace

void merge_linear(const MergeTable& merges, std::vector<int32_t>& ids) {
  if (ids.size() < 2) return;
  std::vector<MergeRule> pairs(ids.size() - 1);
  auto rule_at = [&](size_t i) {
    const MergeRule* rule = merges.find(ids[i], ids[i + 1]);
    return rule ? *rule : MergeRule{kNoMerge, -1};
  };
  for (size_t i = 0; i + 1 < ids.size(); ++i) pairs[i] = rule_at(i);
  while (!pairs.empty()) {
    const auto best = std::min_element(
        pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
    if (best->rank == kNoMerge) break;
    const size_t i = static_cast<size_t>(best - pairs.begin());
    ids[i] = best->merged;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    pairs.erase(pairs.begin() + static_cast<std::ptrdiff_t>(i));
    if (i < pairs.size()) pairs[i] = rule_at(i);
    if (i > 0) pairs[i - 1] = rule_at(i - 1);
  }
}

void merge_with_heap(const MergeTable& merges, std::vector<int32_t>& ids) {
  struct Symbol {
    int32_t id;
    size_t prev;
    size_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    size_t position;
    int32_t merged;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  constexpr size_t kNone = SIZE_MAX;
  const size_t n = ids.size();
  std::vector<Symbol> symbols(n);
  for (size_t i = 0; i < n; ++i)
    symbols[i] = {ids[i], i == 0 ? kNone : i - 1, i + 1 < n ? i + 1 : kNone, true};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](size_t left) {
    const size_t right = symbols[left].next;
    if (right == kNone) return;
    if (const MergeRule* rule = merges.find(symbols[left].id, symbols[right].id)) {
      queue.push({rule->rank, left, rule->merged});
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.position];
    if (!left.alive || left.next == kNone) continue;
    const MergeRule* current = merges.find(left.id, symbols[left.next].id);
    if (current == nullptr || current->merged != top.merged) continue;  // stale entry
    Symbol& right = symbols[left.next];
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (left.next != kNone) symbols[left.next].prev = top.position;
    if (left.prev != kNone) push_pair(left.prev);
    push_pair(top.position);
  }
  ids.clear();
  for (size_t i = 0; i != kNone; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace focusvla::bpe
