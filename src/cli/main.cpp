// The `focusvla` command-line tool.
//   focusvla inspect DIR [--json]    config, files, components, tensor counts, dtypes, parameters
// Global options: --log-level trace|debug|info|warn|error|off, --version, --help.

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#ifdef FOCUSVLA_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/io/checkpoint.h"
#include "focusvla/io/json_file.h"
#include "focusvla/policy/policy.h"
#include "focusvla/version.h"

namespace {

using focusvla::io::Checkpoint;
using focusvla::io::ComponentSummary;

const char* kUsage =
    "usage: focusvla [--log-level LEVEL] <command> [args]\n"
    "\n"
    "commands:\n"
    "  inspect DIR [--json]   describe a checkpoint directory: config, files, components,\n"
    "                         tensor counts, dtypes and parameter counts per component\n"
    "  act [--checkpoint DIR] --image A.png [--image B.png ...] --instruction TEXT\n"
    "      [--proprio v1,...,vN] [--unnorm-key KEY] [--prompt-format openvla|qwen-chat]\n"
    "      [--dtype float32|bfloat16] [--device cpu|cuda] [--center-crop] [--num-images N]\n"
    "      [--threads N] [--repeat N] [--json]\n"
    "                         run the policy on one observation and print the 8 x 7 action\n"
    "                         chunk and the time of each stage. Without --checkpoint: the demo\n"
    "                         checkpoint ($FOCUSVLA_DEMO_CHECKPOINT or build/demo-checkpoint,\n"
    "                         written by scripts/demo: full-size FocusVLA, random weights) on\n"
    "                         the LIBERO sample in assets/libero-sample\n"
    "  version                print the version\n";

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
    j["config"]["focus"] = {{"attention", c.focus->attention},
                            {"top_k", c.focus->top_k},
                            {"gate", c.focus->gate},
                            {"value_source", c.focus->value_source}};
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
    std::printf("  focus                attention %s, top_k %lld, gate %s, value_source %s\n", c.focus->attention.c_str(),
                (long long)c.focus->top_k, c.focus->gate.c_str(), c.focus->value_source.c_str());
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

int run_inspect(const std::vector<std::string>& args) {
  std::string dir;
  bool as_json = false;
  for (const auto& a : args) {
    if (a == "--json")
      as_json = true;
    else if (!a.empty() && a[0] == '-')
      throw focusvla::Error("inspect: unknown option '" + a + "'");
    else if (dir.empty())
      dir = a;
    else
      throw focusvla::Error("inspect: more than one directory given");
  }
  if (dir.empty()) throw focusvla::Error("inspect: missing checkpoint directory\n" + std::string(kUsage));
  const Checkpoint ckpt = Checkpoint::open(dir);
  const auto parts = focusvla::io::summarize(ckpt);
  if (as_json)
    std::cout << inspect_json(ckpt, parts).dump(2) << "\n";
  else
    print_inspection(ckpt, parts);
  return 0;
}


torch::Tensor read_image(const std::string& path) {
#ifdef FOCUSVLA_WITH_IMGCODECS
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  if (bgr.empty()) throw focusvla::Error(path + ": cannot read or decode the image");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
#else
  throw focusvla::Error(path + ": this build has no image decoder (OpenCV imgcodecs was not found)");
#endif
}

std::vector<double> parse_numbers(const std::string& text, const std::string& what) {
  std::vector<double> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || end == item.c_str() || *end != '\0') throw focusvla::Error(what + ": '" + item + "' is not a number");
    out.push_back(v);
  }
  return out;
}

std::string demo_checkpoint() {
  if (const char* env = std::getenv("FOCUSVLA_DEMO_CHECKPOINT")) return env;
  return "build/demo-checkpoint";
}

int run_act(const std::vector<std::string>& args) {
  std::string checkpoint, instruction, proprio_text;
  std::vector<std::string> images;
  focusvla::PolicyOptions options;
  bool as_json = false, have_proprio = false;
  int repeat = 1;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw focusvla::Error("act: " + a + " needs a value");
      return args[++i];
    };
    if (a == "--checkpoint") checkpoint = value();
    else if (a == "--image") images.push_back(value());
    else if (a == "--instruction") instruction = value();
    else if (a == "--proprio") { proprio_text = value(); have_proprio = true; }
    else if (a == "--unnorm-key") options.unnorm_key = value();
    else if (a == "--prompt-format") options.prompt_format = value();
    else if (a == "--center-crop") options.center_crop = true;
    else if (a == "--num-images") options.num_images = std::stoll(value());
    else if (a == "--threads") options.threads = std::stoi(value());
    else if (a == "--repeat") repeat = std::max(1, std::stoi(value()));
    else if (a == "--json") as_json = true;
    else if (a == "--dtype") {
      const std::string d = value();
      if (d == "float32" || d == "fp32") options.dtype = torch::kFloat32;
      else if (d == "bfloat16" || d == "bf16") options.dtype = torch::kBFloat16;
      else throw focusvla::Error("act: --dtype '" + d + "' is not float32 or bfloat16");
    } else if (a == "--device") options.device = torch::Device(value());
    else throw focusvla::Error("act: unknown option '" + a + "'");
  }
  bool demo = false;
  if (checkpoint.empty()) {
    demo = true;
    checkpoint = demo_checkpoint();
    if (!std::filesystem::exists(checkpoint + "/config.json"))
      throw focusvla::Error("act: no --checkpoint, and no demo checkpoint at " + checkpoint +
                            " (scripts/demo writes one: full-size FocusVLA layout, random weights)");
    const std::string sample = std::string(std::getenv("FOCUSVLA_ASSETS") ? std::getenv("FOCUSVLA_ASSETS") : "assets") +
                               "/libero-sample";
    const auto obs = nlohmann::json::parse(focusvla::io::read_text_file(sample + "/observation.json"));
    if (images.empty())
      for (const char* k : {"agentview", "wrist"}) images.push_back(sample + "/" + obs["images"][k].get<std::string>());
    if (instruction.empty()) instruction = obs["task_description"];
    if (!have_proprio) {
      for (const auto& v : obs["state"]) proprio_text += (proprio_text.empty() ? "" : ",") + std::to_string(v.get<double>());
      have_proprio = true;
    }
    if (options.unnorm_key.empty()) options.unnorm_key = "libero_spatial_no_noops";
  }
  if (images.empty()) throw focusvla::Error("act: give at least one --image");
  if (instruction.empty()) throw focusvla::Error("act: --instruction is required");
  if (options.num_images == 0) options.num_images = static_cast<int64_t>(images.size());
  const std::vector<double> proprio = have_proprio ? parse_numbers(proprio_text, "--proprio") : std::vector<double>{};

  const auto load_start = std::chrono::steady_clock::now();
  const focusvla::Policy policy = focusvla::Policy::load(checkpoint, options);
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  std::vector<torch::Tensor> pixels;
  for (const auto& path : images) pixels.push_back(read_image(path));
  focusvla::ActionChunk chunk;
  for (int r = 0; r < repeat; ++r) chunk = policy.act(pixels, instruction, proprio);

  if (as_json) {
    nlohmann::json j;
    j["checkpoint"] = checkpoint;
    j["untrained_demo_weights"] = demo;
    j["instruction"] = instruction;
    j["head"] = policy.head_kind();
    j["unnorm_key"] = policy.unnorm_key();
    for (Eigen::Index r = 0; r < chunk.actions.rows(); ++r) {
      std::vector<double> row(chunk.actions.row(r).data(), chunk.actions.row(r).data() + chunk.actions.cols());
      j["actions"].push_back(row);
    }
    j["timing_ms"] = {{"load", load_ms},
                      {"preprocess", chunk.timing.preprocess_ms},
                      {"vision", chunk.timing.vision_ms},
                      {"projector", chunk.timing.projector_ms},
                      {"llm", chunk.timing.llm_ms},
                      {"head", chunk.timing.head_ms},
                      {"device", chunk.timing.device_ms},
                      {"total", chunk.timing.total_ms}};
    j["execution"] = policy.last_execution();
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  if (demo)
    std::printf("NOTE: demo checkpoint %s has RANDOM, UNTRAINED weights (no trained weights ship):\n"
                "      these actions show the pipeline and its speed, not a policy.\n\n",
                checkpoint.c_str());
  std::printf("policy       %s (%s head, %lld camera(s), unnorm_key %s)\n", checkpoint.c_str(), policy.head_kind().c_str(),
              (long long)policy.num_images(), policy.unnorm_key().c_str());
  std::printf("instruction  %s\n\n", instruction.c_str());
  std::printf("  step %10s %10s %10s %10s %10s %10s %10s\n", "a0", "a1", "a2", "a3", "a4", "a5", "a6");
  for (Eigen::Index r = 0; r < chunk.actions.rows(); ++r) {
    std::printf("  %4lld", (long long)r);
    for (Eigen::Index c = 0; c < chunk.actions.cols(); ++c) std::printf(" %10.5f", chunk.actions(r, c));
    std::printf("\n");
  }
  const char* last = repeat > 1 ? " (last of --repeat)" : "";
  if (chunk.timing.cuda_graph)
    std::printf("\ntime (ms)    load %.0f | host %.2f  device %.2f (one CUDA graph)  total %.2f%s\n", load_ms,
                chunk.timing.preprocess_ms, chunk.timing.device_ms, chunk.timing.total_ms, last);
  else
    std::printf("\ntime (ms)    load %.0f | preprocess %.1f  vision %.1f  projector %.1f  llm %.1f  head %.1f  total %.1f%s\n",
                load_ms, chunk.timing.preprocess_ms, chunk.timing.vision_ms, chunk.timing.projector_ms,
                chunk.timing.llm_ms, chunk.timing.head_ms, chunk.timing.total_ms, last);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    while (!args.empty() && args[0] == "--log-level") {
      if (args.size() < 2) throw focusvla::Error("--log-level: missing value");
      focusvla::set_log_level(focusvla::parse_log_level(args[1]));
      args.erase(args.begin(), args.begin() + 2);
    }
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
      std::fputs(kUsage, args.empty() ? stderr : stdout);
      return args.empty() ? 2 : 0;
    }
    const std::string command = args[0];
    args.erase(args.begin());
    if (command == "inspect") return run_inspect(args);
    if (command == "act") return run_act(args);
    if (command == "version" || command == "--version") {
      std::printf("focusvla %s\n", focusvla::kVersion);
      return 0;
    }
    throw focusvla::Error("unknown command '" + command + "'\n" + std::string(kUsage));
  } catch (const focusvla::Error& e) {
    std::fprintf(stderr, "focusvla: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "focusvla: internal error: %s\n", e.what());
    return 3;
  }
}
