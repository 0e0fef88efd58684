#pragma once
// Sequence assembly (SPEC 6) and conditioning extraction (SPEC 8): where each token sits in the
// decoder's input, and which hidden states the action head reads.
//
//   position  0        1 .. Nv         Nv+1 .. Nv+P-1   Nv+P .. Nv+P+Nq-1   Nv+P+Nq
//   token     t_0      visual tokens   t_1 .. t_{P-1}   action queries      stop (id 2)
//
// Conditioning is taken one position BEFORE the token it stands for (next-token alignment, as
// the reference trains): visual states at 0 .. Nv-1, query states at q0-1 .. q0+Nq-2 with
// q0 = Nv + P the first query position. A checkpoint only works if this is reproduced exactly.

#include <torch/torch.h>

#include <vector>

namespace focusvla::policy {

// The token id the reference appends after the action queries.
constexpr int64_t kStopTokenId = 2;

// Positions of one sample's sequence: Nv visual tokens, a P-token prompt, Nq queries.
struct SequenceLayout {
  int64_t visual_tokens = 0, prompt_length = 0, queries = 0;
  int64_t first_query() const { return visual_tokens + prompt_length; }  // q0
  int64_t length() const { return visual_tokens + prompt_length + queries + 1; }
};

// Writes [t_0] + visual + [t_1 ..] + queries + [stop] into row[0 .. layout.length()) of `row`
// (L, D); the rest (right padding of a batch) is left untouched. text (P, D) are the prompt's
// embeddings, visual (Nv, D), queries (Nq, D), stop (1, D).
void assemble_sequence(torch::Tensor row, const torch::Tensor& text, const torch::Tensor& visual,
                       const torch::Tensor& queries, const torch::Tensor& stop);

// The head's inputs from the decoder's hidden states (layers + 1, B, L, D):
//   visual (B, layers + 1, Nv, D)  a view, no copy
//   queries (B, layers + 1, Nq, D) one slice per sample (their prompts may differ in length)
struct Conditioning {
  torch::Tensor visual;
  torch::Tensor queries;
};
Conditioning conditioning(const torch::Tensor& hidden, int64_t visual_tokens, const std::vector<int64_t>& prompt_lengths,
                          int64_t queries);

}  // namespace focusvla::policy
