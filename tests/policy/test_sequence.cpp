// Sequence assembly (SPEC 6), conditioning extraction (SPEC 8) and normalization (SPEC 10) as
// functions of their own, against the positions and formulas the SPEC writes down. (End to end,
// the same code is checked against the Python reference pipeline in test_policy.cpp.)

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "focusvla/io/checkpoint_config.h"
#include "focusvla/policy/normalization.h"
#include "focusvla/policy/sequence.h"
#include "test_util.h"

namespace focusvla::policy {
namespace {

// A (n, 1) column whose rows hold `base + row`: every position is recognisable by its value.
torch::Tensor labelled(int64_t n, double base) { return torch::arange(n, torch::kFloat64).add(base).unsqueeze(1); }

TEST(PolicySequence, TokensSitWhereSpec6PutsThem) {
  const int64_t nv = 5, p = 3, nq = 4;
  const SequenceLayout s{nv, p, nq};
  EXPECT_EQ(s.first_query(), nv + p);
  EXPECT_EQ(s.length(), nv + p + nq + 1);
  torch::Tensor row = torch::full({s.length() + 2, 1}, -1.0, torch::kFloat64);  // 2 padding positions
  assemble_sequence(row, labelled(p, 100), labelled(nv, 200), labelled(nq, 300), labelled(1, 400));
  std::vector<double> expected{100};                              // t_0
  for (int64_t i = 0; i < nv; ++i) expected.push_back(200 + i);   // visual tokens
  for (int64_t i = 1; i < p; ++i) expected.push_back(100 + i);    // t_1 .. t_{P-1}
  for (int64_t i = 0; i < nq; ++i) expected.push_back(300 + i);   // action queries
  expected.push_back(400);                                         // stop
  expected.push_back(-1);                                          // padding untouched
  expected.push_back(-1);
  ASSERT_EQ(row.size(0), static_cast<int64_t>(expected.size()));
  for (int64_t i = 0; i < row.size(0); ++i) EXPECT_EQ(row[i][0].item<double>(), expected[static_cast<size_t>(i)]) << i;
}

TEST(PolicySequence, RowTooShortIsAnError) {
  torch::Tensor row = torch::zeros({5, 1}, torch::kFloat64);
  testing::expect_error([&] { assemble_sequence(row, labelled(3, 0), labelled(5, 0), labelled(4, 0), labelled(1, 0)); },
                        {"assemble_sequence", "needs 13"});
}

// hidden[l][b][pos] = 1000 l + 100 b + pos: the conditioning must read one position before each
// token, per sample (prompts of different lengths in one batch).
TEST(PolicySequence, ConditioningIsOnePositionBeforeEachToken) {
  const int64_t layers = 3, nv = 4, nq = 3;
  const std::vector<int64_t> prompts{2, 5};
  const int64_t length = SequenceLayout{nv, 5, nq}.length();
  torch::Tensor hidden = torch::zeros({layers, 2, length, 1}, torch::kFloat64);
  for (int64_t l = 0; l < layers; ++l)
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t pos = 0; pos < length; ++pos) hidden[l][b][pos][0] = 1000.0 * l + 100.0 * b + pos;
  const Conditioning c = conditioning(hidden, nv, prompts, nq);
  ASSERT_EQ(c.visual.sizes(), (std::vector<int64_t>{2, layers, nv, 1}));
  ASSERT_EQ(c.queries.sizes(), (std::vector<int64_t>{2, layers, nq, 1}));
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t q0 = nv + prompts[static_cast<size_t>(b)];
    for (int64_t l = 0; l < layers; ++l) {
      for (int64_t i = 0; i < nv; ++i)  // positions 0 .. Nv-1: t_0 and the first Nv-1 visual tokens
        EXPECT_EQ(c.visual[b][l][i][0].item<double>(), 1000.0 * l + 100.0 * b + i);
      for (int64_t i = 0; i < nq; ++i)  // positions q0-1 .. q0+Nq-2: the last prompt token, the first Nq-1 queries
        EXPECT_EQ(c.queries[b][l][i][0].item<double>(), 1000.0 * l + 100.0 * b + q0 - 1 + i);
    }
  }
}

io::NormStats stats() {
  io::NormStats s;
  s.q01 = {-1.0, 0.0, 2.0};
  s.q99 = {1.0, 4.0, 3.0};
  s.min = {-2.0, -1.0, 0.0};
  s.max = {2.0, 5.0, 4.0};
  s.mask = {true, true, false};
  return s;
}

TEST(PolicyNormalizer, ProprioInIsTheReferenceFormula) {
  const Normalizer n = Normalizer::from_stats(stats(), "bounds_q99", "test");
  const std::vector<double> raw{0.5, 5.0, 0.25};
  std::vector<float> out(3, std::nanf(""));
  n.normalize(raw, out.data());
  EXPECT_FLOAT_EQ(out[0], static_cast<float>(2 * (0.5 + 1.0) / (2.0 + 1e-8) - 1));
  EXPECT_FLOAT_EQ(out[1], 1.0f);   // clipped
  EXPECT_FLOAT_EQ(out[2], 0.25f);  // masked: passed through (clipped only)
}

TEST(PolicyNormalizer, ActionsOutInvertTheBounds) {
  for (const char* mode : {"bounds_q99", "bounds"}) {
    const Normalizer n = Normalizer::from_stats(stats(), mode, "test");
    const io::NormStats s = stats();
    const auto& low = std::string(mode) == "bounds" ? s.min : s.q01;
    const auto& high = std::string(mode) == "bounds" ? s.max : s.q99;
    Normalizer::Matrix x(2, 3);
    x << -1, 0, 0.5, 1, 0.25, -0.75;
    const Normalizer::Matrix y = n.unnormalize(x);
    for (int r = 0; r < 2; ++r) {
      for (int c = 0; c < 2; ++c) EXPECT_DOUBLE_EQ(y(r, c), 0.5 * (x(r, c) + 1) * (high[c] - low[c] + 1e-8) + low[c]);
      EXPECT_EQ(y(r, 2), x(r, 2));  // masked
    }
  }
}

TEST(PolicyNormalizer, BadStatisticsAreNamed) {
  io::NormStats s = stats();
  s.min.clear();
  testing::expect_error([&] { Normalizer::from_stats(s, "bounds", "libero action statistics"); },
                        {"libero action statistics", "no min/max"});
  testing::expect_error([&] { Normalizer::from_stats(stats(), "zscore", "libero action statistics"); },
                        {"libero action statistics", "zscore"});
}

}  // namespace
}  // namespace focusvla::policy
