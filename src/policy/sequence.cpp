#include "focusvla/policy/sequence.h"

#include "focusvla/core/error.h"

namespace focusvla::policy {

void assemble_sequence(torch::Tensor row, const torch::Tensor& text, const torch::Tensor& visual,
                       const torch::Tensor& queries, const torch::Tensor& stop) {
  const SequenceLayout s{visual.size(0), text.size(0), queries.size(0)};
  check(s.prompt_length >= 1, "assemble_sequence", "empty prompt");
  check(row.size(0) >= s.length(), "assemble_sequence",
        "row of " + std::to_string(row.size(0)) + " positions, the sequence needs " + std::to_string(s.length()));
  row.narrow(0, 0, 1).copy_(text.narrow(0, 0, 1));
  row.narrow(0, 1, s.visual_tokens).copy_(visual);
  row.narrow(0, 1 + s.visual_tokens, s.prompt_length - 1).copy_(text.narrow(0, 1, s.prompt_length - 1));
  row.narrow(0, s.first_query(), s.queries).copy_(queries);
  row.narrow(0, s.first_query() + s.queries, 1).copy_(stop);
}

Conditioning conditioning(const torch::Tensor& hidden, int64_t visual_tokens, const std::vector<int64_t>& prompt_lengths,
                          int64_t queries) {
  check(hidden.dim() == 4 && hidden.size(1) == static_cast<int64_t>(prompt_lengths.size()), "conditioning",
        "hidden states must be (layers + 1, B, L, D) with one prompt length per sample");
  Conditioning c;
  c.visual = hidden.narrow(2, 0, visual_tokens).permute({1, 0, 2, 3});
  std::vector<torch::Tensor> per_sample;
  for (size_t b = 0; b < prompt_lengths.size(); ++b) {
    const SequenceLayout s{visual_tokens, prompt_lengths[b], queries};
    per_sample.push_back(hidden.select(1, static_cast<int64_t>(b)).narrow(1, s.first_query() - 1, queries));
  }
  c.queries = torch::stack(per_sample);
  return c;
}

}  // namespace focusvla::policy
