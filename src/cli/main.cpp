// The `focusvla` command-line tool (arguments parsed with CLI11; every command answers --help).
//   focusvla inspect DIR [--json]    config, files, components, tensor counts, dtypes, parameters
//   focusvla act [options]           one observation -> the action chunk, the settings that ran
//   focusvla explain [options]       where the head looks, its gates, whether it uses vision (src/cli/explain.cpp)
//   focusvla serve --checkpoint DIR  the policy over openpi's websocket protocol (src/cli/serve.cpp)
//   focusvla version
// Global options: --log-level trace|debug|info|warn|error|off, --version, --help.
// Exit status: 0 success, 1 an Error (bad file, bad input), 2 a usage error, 3 an internal error.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "focusvla/core/error.h"
#include "focusvla/core/heap.h"
#include "focusvla/core/log.h"
#include "focusvla/io/checkpoint.h"
#include "focusvla/io/json_file.h"
#include "focusvla/policy/policy.h"
#include "focusvla/version.h"
#include "explain.h"
#include "inputs.h"
#include "policy_args.h"
#ifdef FOCUSVLA_WITH_SERVE
#include "serve.h"
#endif

namespace {

using focusvla::io::Checkpoint;
using focusvla::io::ComponentSummary;

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string dtype_list(const ComponentSummary& c) {
  std::string out;
  for (const auto& [dtype, count] : c.dtypes) out += (out.empty() ? "" : " ") + dtype + "x" + std::to_string(count);
  return out.empty() ? "-" : out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

nlohmann::json inspect_json(const Checkpoint& ckpt, const std::vector<ComponentSummary>& parts) {
  const auto& c = ckpt.config;
  const auto& t = c.text_config;
  nlohmann::json j;
  j["directory"] = ckpt.files.directory;
  j["config"] = {{"model_type", c.model_type},
                 {"timm_model_ids", c.timm_model_ids},
                 {"image_sizes", c.image_sizes},
                 {"use_fused_vision_backbone", c.use_fused_vision_backbone},
                 {"vision_backbone_id", c.vision_backbone_id},
                 {"llm_backbone_id", c.llm_backbone_id},
                 {"torch_dtype", c.torch_dtype},
                 {"text_config",
                  {{"hidden_size", t.hidden_size},
                   {"intermediate_size", t.intermediate_size},
                   {"num_hidden_layers", t.num_hidden_layers},
                   {"num_attention_heads", t.num_attention_heads},
                   {"num_key_value_heads", t.num_key_value_heads},
                   {"vocab_size", t.vocab_size},
                   {"rope_theta", t.rope_theta},
                   {"rms_norm_eps", t.rms_norm_eps}}}};
  if (c.focus)
    j["config"]["focus"] = {{"attention", focusvla::io::to_string(c.focus->attention)},
                            {"top_k", c.focus->top_k},
                            {"gate", focusvla::io::to_string(c.focus->gate)},
                            {"value_source", focusvla::io::to_string(c.focus->value_source)}};
  std::vector<std::string> datasets;
  for (const auto& kv : ckpt.norm_stats) datasets.push_back(kv.first);
  j["norm_stats"] = datasets;
  j["files"] = {{"config", ckpt.files.config},
                {"model_weights", ckpt.files.model_weights},
                {"action_head", ckpt.files.action_head},
                {"proprio_projector", ckpt.files.proprio_projector},
                {"preprocessor_config", ckpt.files.preprocessor_config},
                {"dataset_statistics", ckpt.files.dataset_statistics},
                {"tokenizer", ckpt.files.tokenizer}};
  int64_t total_params = 0;
  size_t total_tensors = 0;
  for (const auto& p : parts) {
    j["components"].push_back(
        {{"name", p.name}, {"prefix", p.prefix}, {"tensors", p.tensors}, {"parameters", p.parameters}, {"dtypes", p.dtypes}});
    total_params += p.parameters;
    total_tensors += p.tensors;
  }
  j["total"] = {{"tensors", total_tensors}, {"parameters", total_params}};
  return j;
}

void print_inspection(const Checkpoint& ckpt, const std::vector<ComponentSummary>& parts) {
  const auto& c = ckpt.config;
  const auto& t = c.text_config;
  std::printf("checkpoint  %s\n\n", ckpt.files.directory.c_str());
  std::printf("config\n");
  std::printf("  model_type           %s\n", c.model_type.c_str());
  std::printf("  vision               %s (fused: %s), image sizes %s\n", join(c.timm_model_ids).c_str(),
              c.use_fused_vision_backbone ? "yes" : "no", nlohmann::json(c.image_sizes).dump().c_str());
  std::printf("  llm                  %s: hidden %lld, %lld layers, %lld heads / %lld kv heads, mlp %lld, vocab %lld, "
              "rope theta %g\n",
              c.llm_backbone_id.empty() ? "qwen2" : c.llm_backbone_id.c_str(), (long long)t.hidden_size,
              (long long)t.num_hidden_layers, (long long)t.num_attention_heads, (long long)t.num_key_value_heads,
              (long long)t.intermediate_size, (long long)t.vocab_size, t.rope_theta);
  if (c.focus)
    std::printf("  focus                attention %s, top_k %lld, gate %s, value_source %s\n",
                focusvla::io::to_string(c.focus->attention), (long long)c.focus->top_k,
                focusvla::io::to_string(c.focus->gate), focusvla::io::to_string(c.focus->value_source));
  else
    std::printf("  focus                none (VLA-Adapter head)\n");
  std::vector<std::string> datasets;
  for (const auto& kv : ckpt.norm_stats) datasets.push_back(kv.first);
  std::printf("  norm stats           %zu dataset(s)%s%s\n", datasets.size(), datasets.empty() ? "" : ": ",
              datasets.size() <= 6 ? join(datasets).c_str() : (join({datasets[0], datasets[1], "..."})).c_str());
  std::printf("\nfiles\n");
  auto file = [](const char* label, const std::string& path) {
    std::printf("  %-20s %s\n", label, path.empty() ? "(absent)" : path.c_str());
  };
  file("weights", ckpt.files.model_weights);
  file("action head", ckpt.files.action_head);
  file("proprio projector", ckpt.files.proprio_projector);
  file("preprocessor", ckpt.files.preprocessor_config);
  file("dataset statistics", ckpt.files.dataset_statistics);
  std::printf("  %-20s %zu file(s)\n", "tokenizer", ckpt.files.tokenizer.size());
  std::printf("\ncomponents\n  %-36s %8s %16s  %s\n", "name", "tensors", "parameters", "dtypes");
  int64_t total_params = 0;
  size_t total_tensors = 0;
  for (const auto& p : parts) {
    std::printf("  %-36s %8zu %16s  %s\n", p.name.c_str(), p.tensors, with_commas(p.parameters).c_str(),
                dtype_list(p).c_str());
    total_params += p.parameters;
    total_tensors += p.tensors;
  }
  std::printf("  %-36s %8zu %16s\n", "total", total_tensors, with_commas(total_params).c_str());
}

void run_inspect(const std::string& dir, bool as_json) {
  const Checkpoint ckpt = Checkpoint::open(dir);
  const auto parts = focusvla::io::summarize(ckpt);
  if (as_json)
    std::cout << inspect_json(ckpt, parts).dump(2) << "\n";
  else
    print_inspection(ckpt, parts);
}

// What `act` was asked for, as parsed.
struct ActArgs {
  focusvla::cli::PolicyArgs policy;
  focusvla::cli::ObservationArgs obs;
  bool json = false;
  int repeat = 1;
};

// The value at quantile q (0..1) of `values` (nearest rank).
double quantile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// JSON-style quoting for the prompt text (it holds newlines and special tokens).
std::string quoted(const std::string& text) { return nlohmann::json(text).dump(); }


void run_act(ActArgs a) {
  focusvla::PolicyOptions options = focusvla::cli::policy_options(a.policy);
  const bool demo = focusvla::cli::use_demo_defaults("act", a.policy, a.obs, options);
  focusvla::cli::check_cameras("act", a.obs, a.policy.num_images, options);
  const std::vector<double> proprio =
      a.obs.proprio.empty() ? std::vector<double>{} : focusvla::cli::parse_numbers(a.obs.proprio, "--proprio");

  const auto load_start = std::chrono::steady_clock::now();
  const focusvla::Policy policy = focusvla::Policy::load(a.policy.checkpoint, options);
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  std::vector<torch::Tensor> pixels;
  for (const auto& path : a.obs.images) pixels.push_back(focusvla::cli::read_image(path));
  const focusvla::PromptText prompt = policy.prompt(a.obs.instruction);
  focusvla::ActionChunk chunk;
  std::vector<double> totals;
  for (int r = 0; r < a.repeat; ++r) {
    chunk = policy.act(pixels, a.obs.instruction, proprio);
    totals.push_back(chunk.timing.total_ms);
  }
  const auto& settings = policy.settings();

  if (a.json) {
    nlohmann::json j;
    j["checkpoint"] = a.policy.checkpoint;
    j["untrained_demo_weights"] = demo;
    j["instruction"] = a.obs.instruction;
    j["head"] = policy.head_kind();
    j["unnorm_key"] = policy.unnorm_key();
    j["settings"] = focusvla::settings_json(settings);
    j["prompt"] = {{"text", prompt.text}, {"ids", prompt.ids}};
    for (Eigen::Index r = 0; r < chunk.actions.rows(); ++r) {
      std::vector<double> row(chunk.actions.row(r).data(), chunk.actions.row(r).data() + chunk.actions.cols());
      j["actions"].push_back(row);
    }
    j["load_ms"] = load_ms;
    for (const auto& [name, value] : focusvla::timing_fields(chunk.timing)) j["timing"][name] = value;
    j["timing"]["cuda_graph"] = chunk.timing.cuda_graph;
    j["repeat"] = {{"calls", a.repeat},
                   {"total_ms", {{"min", quantile(totals, 0)}, {"p50", quantile(totals, 0.5)}, {"p99", quantile(totals, 0.99)}}}};
    j["execution"] = policy.last_execution();
    std::cout << j.dump(2) << "\n";
    return;
  }
  if (demo)
    std::printf("NOTE: demo checkpoint %s has RANDOM, UNTRAINED weights (no trained weights ship):\n"
                "      these actions show the pipeline and its speed, not a policy.\n\n",
                a.policy.checkpoint.c_str());
  std::printf("policy       %s (%s head, %lld camera(s), unnorm_key %s)\n", a.policy.checkpoint.c_str(), policy.head_kind().c_str(),
              (long long)settings.cameras, settings.unnorm_key.c_str());
  std::printf("settings     prompt %s (%s), center crop %s, JPEG round trip %s, dtype %s (%s), device %s, matmul %s\n",
              settings.prompt_format.c_str(), settings.prompt_format_source.c_str(), settings.center_crop ? "on" : "off",
              settings.jpeg_roundtrip ? "on" : "off",
              focusvla::dtype_name(settings.dtype).c_str(), settings.dtype_source.c_str(), settings.device.str().c_str(),
              settings.matmul.c_str());
  if (settings.quantize != "none")
    std::printf("quantize     %s: %s\n", settings.quantize.c_str(), settings.quantize_detail.c_str());
  std::printf("instruction  %s\n", a.obs.instruction.c_str());
  std::printf("prompt       %s\n", quoted(prompt.text).c_str());
  std::printf("token ids    %s (%zu)\n\n", nlohmann::json(prompt.ids).dump().c_str(), prompt.ids.size());
  std::printf("  step %10s %10s %10s %10s %10s %10s %10s\n", "a0", "a1", "a2", "a3", "a4", "a5", "a6");
  for (Eigen::Index r = 0; r < chunk.actions.rows(); ++r) {
    std::printf("  %4lld", (long long)r);
    for (Eigen::Index c = 0; c < chunk.actions.cols(); ++c) std::printf(" %10.5f", chunk.actions(r, c));
    std::printf("\n");
  }
  if (chunk.timing.cuda_graph)
    std::printf("\ntime (ms)    load %.0f | host %.2f  device %.2f (one CUDA graph)  total %.2f\n", load_ms,
                chunk.timing.preprocess_ms, chunk.timing.device_ms, chunk.timing.total_ms);
  else
    std::printf("\ntime (ms)    load %.0f | preprocess %.1f  vision %.1f  projector %.1f  llm %.1f  head %.1f  total %.1f\n",
                load_ms, chunk.timing.preprocess_ms, chunk.timing.vision_ms, chunk.timing.projector_ms,
                chunk.timing.llm_ms, chunk.timing.head_ms, chunk.timing.total_ms);
  if (a.repeat > 1)
    std::printf("             %d calls: total min %.2f  p50 %.2f  p99 %.2f (stages above: the last call)\n", a.repeat,
                quantile(totals, 0), quantile(totals, 0.5), quantile(totals, 0.99));
}

// Adds the `act` command and its options to `app`.
CLI::App* add_act_command(CLI::App& app, ActArgs& a) {
  CLI::App* act = app.add_subcommand(
      "act",
      "Run the policy on one observation: print the 8 x 7 action chunk, the settings that ran (prompt format and "
      "text, token ids, center crop, dtype, device, matmul mode, unnorm key, cameras) and the time of each stage. "
      "The defaults are the reference's evaluation settings for the checkpoint. Without --checkpoint: the demo "
      "checkpoint ($FOCUSVLA_DEMO_CHECKPOINT or build/demo-checkpoint, written by scripts/demo: full-size FocusVLA, "
      "random weights) on the LIBERO sample in assets/libero-sample.");
  act->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a repeated flag: the last wins
  focusvla::cli::add_policy_options(*act, a.policy, "cpu");
  focusvla::cli::add_observation_options(*act, a.obs);
  focusvla::cli::add_int_option(*act, "--num-images", a.policy.num_images, 1, 16,
                                "cameras per observation (must equal the --image count)");
  focusvla::cli::add_int_option(*act, "--repeat", a.repeat, 1, 1000000, "calls to time (reports min, p50, p99 of the total)");
  act->add_flag("--json", a.json, "print JSON");
  return act;
}

}  // namespace

int main(int argc, char** argv) {
  // Large activations reused call after call instead of mapped afresh (core/heap.h).
  focusvla::use_heap_for_large_allocations();
  CLI::App app{"focusvla: FocusVLA / VLA-Adapter robot policies on LibTorch", "focusvla"};
  app.require_subcommand(1);
  app.fallthrough();  // global options after the command too: focusvla act --log-level info ...
  std::string log_level;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off");
  app.set_version_flag("--version", std::string("focusvla ") + focusvla::kVersion);

  std::string inspect_dir;
  bool inspect_as_json = false;
  CLI::App* inspect = app.add_subcommand(
      "inspect", "Describe a checkpoint directory: config, files, components, tensor counts, dtypes, parameters.");
  inspect->add_option("DIR", inspect_dir, "checkpoint directory")->required();
  inspect->add_flag("--json", inspect_as_json, "print JSON");

  ActArgs act_args;
  CLI::App* act = add_act_command(app, act_args);
  focusvla::cli::ExplainArgs explain_args;
  CLI::App* explain = focusvla::cli::add_explain_command(app, explain_args);
#ifdef FOCUSVLA_WITH_SERVE
  focusvla::cli::ServeArgs serve_args;
  CLI::App* serve = focusvla::cli::add_serve_command(app, serve_args);
#endif
  CLI::App* version = app.add_subcommand("version", "Print the version.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "focusvla: error: %s\n(run 'focusvla --help' or 'focusvla <command> --help')\n", e.what());
    return 2;
  }
  try {
    if (!log_level.empty()) focusvla::set_log_level(focusvla::parse_log_level(log_level));
    if (*inspect) run_inspect(inspect_dir, inspect_as_json);
    if (*act) run_act(act_args);
    if (*explain) focusvla::cli::run_explain(explain_args);
#ifdef FOCUSVLA_WITH_SERVE
    if (*serve) focusvla::cli::run_serve(serve_args, !log_level.empty());
#endif
    if (*version) std::printf("focusvla %s\n", focusvla::kVersion);
    return 0;
  } catch (const focusvla::Error& e) {
    std::fprintf(stderr, "focusvla: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "focusvla: internal error: %s\n", e.what());
    return 3;
  }
}
