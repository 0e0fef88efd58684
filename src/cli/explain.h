#pragma once
// `focusvla explain`: where the policy looks and whether it uses vision (focusvla/policy/explain.h)
// on the command line, with pictures: per camera the image with a heat map on its patch grid,
// the gates per block as a bar chart, the attention mass per source as a bar chart, explain.json,
// and on the terminal a table and a one-line verdict.

#include <CLI/CLI.hpp>

#include <string>

#include "inputs.h"
#include "policy_args.h"

namespace focusvla::cli {

struct ExplainArgs {
  PolicyArgs policy;
  ObservationArgs obs;
  std::string out;
  bool per_block = false, no_reliance = false, json = false;
  int gray = 128;
  std::string compare_quantize;  // "" or a --quantize value: the focus audit (policy/quantize_audit.h)
};

CLI::App* add_explain_command(CLI::App& app, ExplainArgs& a);
// Throws Error for bad input, an unwritable --out, or a build without OpenCV imgcodecs.
void run_explain(ExplainArgs a);

}  // namespace focusvla::cli
