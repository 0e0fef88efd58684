#pragma once
// `focusvla serve`: the policy server (focusvla/serve/server.h) on the command line.

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "policy_args.h"

namespace focusvla::cli {

struct ServeArgs {
  PolicyArgs policy;
  std::string host = "127.0.0.1", api_key, state_key = "observation/state", prompt_key = "prompt";
  std::vector<std::string> image_keys, warmup_instructions;
  int port = 8000, max_batch = 8, io_threads = 1, max_connections = 256, max_prompt_bytes = 4096;
  double max_wait_ms = 2, max_frame_mb = 8, idle_timeout_s = 300, stats_interval_s = 60, drain_timeout_s = 30;
};

CLI::App* add_serve_command(CLI::App& app, ServeArgs& a);
// Serves until SIGINT / SIGTERM; returns after the drain. Throws Error when it cannot start.
void run_serve(const ServeArgs& a, bool log_level_given);

}  // namespace focusvla::cli
