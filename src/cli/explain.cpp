#include "explain.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#ifdef FOCUSVLA_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include "focusvla/core/error.h"
#include "focusvla/policy/explain.h"
#include "focusvla/policy/quantize_audit.h"

namespace focusvla::cli {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Pictures (OpenCV imgproc + imgcodecs)

#ifdef FOCUSVLA_WITH_IMGCODECS

void write_png(const std::string& path, const cv::Mat& bgr) {
  bool ok = false;
  try {
    ok = cv::imwrite(path, bgr);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot write the PNG (" + e.what() + ")");
  }
  if (!ok) throw Error(path + ": cannot write the PNG");
}

cv::Mat to_bgr(const torch::Tensor& rgb) {
  const torch::Tensor t = rgb.to(torch::kCPU).contiguous();
  cv::Mat view(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8UC3, const_cast<uint8_t*>(t.data_ptr<uint8_t>()));
  cv::Mat bgr;
  cv::cvtColor(view, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

// The part of an image the patch grid covers: the center `fraction` of each side.
cv::Rect view_box(const cv::Size& size, double fraction) {
  const auto edge = [&](int extent, double at) { return static_cast<int>(std::lround(at * extent)); };
  const double from = (1.0 - fraction) / 2, to = (1.0 + fraction) / 2;
  const int x0 = edge(size.width, from), y0 = edge(size.height, from);
  return {x0, y0, std::max(1, edge(size.width, to) - x0), std::max(1, edge(size.height, to) - y0)};
}

// The camera image (its own size) with the grid as a heat map over the part the encoders saw:
// each patch one flat cell (nearest-neighbour upsampling), turbo colours from `low` (blue) to
// `high` (red), half opaque; outside that part the image is dimmed and a white frame marks it.
cv::Mat heat_map(const torch::Tensor& image, const PatchGrid& grid, double low, double high, double view_fraction) {
  const cv::Mat bgr = to_bgr(image);
  cv::Mat out = bgr * 0.45;
  const cv::Rect box = view_box(bgr.size(), view_fraction);
  cv::Mat cells(static_cast<int>(grid.rows), static_cast<int>(grid.cols), CV_8UC1);
  const double span = high > low ? high - low : 1.0;
  for (int r = 0; r < cells.rows; ++r)
    for (int c = 0; c < cells.cols; ++c)
      cells.at<uint8_t>(r, c) = cv::saturate_cast<uint8_t>(255.0 * (grid.at(r, c) - low) / span);
  cv::Mat up, colors, blended;
  cv::resize(cells, up, box.size(), 0, 0, cv::INTER_NEAREST);
  cv::applyColorMap(up, colors, cv::COLORMAP_TURBO);
  cv::addWeighted(bgr(box), 0.5, colors, 0.5, 0.0, blended);
  blended.copyTo(out(box));
  if (view_fraction < 1) cv::rectangle(out, box, cv::Scalar(255, 255, 255), 1);
  return out;
}

// A bar chart, one bar per block: each bar a stack of segments from 0 (a negative single segment
// goes down), optional black ticks, y from `y_low` to `y_high`, a title and a legend.
struct Chart {
  std::string title;
  std::vector<std::pair<std::string, cv::Scalar>> legend;  // one per segment
  std::vector<std::vector<double>> bars;                   // per block, its segments
  std::vector<double> ticks;                               // per block (empty: none)
  double y_low = 0, y_high = 1;
};

cv::Mat draw_chart(const Chart& chart) {
  const int n = static_cast<int>(chart.bars.size());
  const int left = 48, right = 16, top = 54, bottom = 40, gap = 6;
  const int bar = std::clamp((480 - left - right) / std::max(n, 1) - gap, 22, 60);
  const int width = std::max(480, left + right + n * (bar + gap)), height = 320;
  cv::Mat img(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  const int plot_h = height - top - bottom;
  const auto y_of = [&](double v) {
    const double t = (std::clamp(v, chart.y_low, chart.y_high) - chart.y_low) / (chart.y_high - chart.y_low);
    return top + static_cast<int>(std::lround((1.0 - t) * plot_h));
  };
  const auto text = [&](const std::string& s, int x, int y, double scale = 0.4) {
    cv::putText(img, s, {x, y}, cv::FONT_HERSHEY_SIMPLEX, scale, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  };
  text(chart.title, 8, 18, 0.45);
  int lx = 8;
  for (const auto& [name, color] : chart.legend) {
    cv::rectangle(img, {lx, 28, 10, 10}, color, cv::FILLED);
    text(name, lx + 14, 37);
    lx += 24 + static_cast<int>(name.size()) * 7;
  }
  for (const double v : {chart.y_low, (chart.y_low + chart.y_high) / 2, chart.y_high}) {
    cv::line(img, {left - 4, y_of(v)}, {width - right, y_of(v)}, cv::Scalar(220, 220, 220), 1);
    char label[16];
    std::snprintf(label, sizeof label, "%.2g", v);
    text(label, 6, y_of(v) + 4);
  }
  const int zero = y_of(std::clamp(0.0, chart.y_low, chart.y_high));
  for (int b = 0; b < n; ++b) {
    const int x = left + b * (bar + gap);
    double base = 0;
    for (size_t s = 0; s < chart.bars[b].size(); ++s) {
      const double v = chart.bars[b][s];
      const int y0 = y_of(base), y1 = y_of(base + v);
      if (y0 != y1) cv::rectangle(img, cv::Point(x, std::min(y0, y1)), cv::Point(x + bar, std::max(y0, y1)),
                                  chart.legend.at(s).second, cv::FILLED);
      base += v;
    }
    if (!chart.ticks.empty())
      cv::line(img, {x - 2, y_of(chart.ticks[b])}, {x + bar + 2, y_of(chart.ticks[b])}, cv::Scalar(0, 0, 0), 2);
    if (n <= 32 || b % 2 == 0) text(std::to_string(b), x + bar / 2 - (b < 10 ? 4 : 8), height - bottom + 16, 0.38);
  }
  cv::line(img, {left - 4, zero}, {width - right, zero}, cv::Scalar(0, 0, 0), 1);
  text("block", width / 2 - 16, height - 8);
  return img;
}

const cv::Scalar kBlue(200, 110, 40), kGray(200, 200, 200), kOrange(40, 140, 240), kGreen(90, 170, 60),
    kPurple(160, 80, 140), kRed(60, 60, 210);

Chart gate_chart(const Explanation& e) {
  Chart c;
  if (!e.gates.empty()) {
    c.title = e.gates[0].kind + " gate per block: share of gate values, mean (black tick)";
    c.legend = {{"< 0.1", kBlue}, {"0.1 - 0.9", kGray}, {"> 0.9", kOrange}};
    for (const auto& g : e.gates) {
      c.bars.push_back({g.below_0_1, 1.0 - g.below_0_1 - g.above_0_9, g.above_0_9});
      c.ticks.push_back(g.mean);
    }
    return c;
  }
  c.title = "scalar visual gate tanh(g) per block";
  c.legend = {{"tanh(g)", kPurple}};
  c.y_low = -1;
  for (const double g : e.scalar_gates) c.bars.push_back({g});
  return c;
}

Chart source_chart(const Explanation& e) {
  Chart c;
  c.title = "attention mass per source (one softmax over all), per block";
  c.legend = {{"self", kGray}, {"action queries", kOrange}, {"proprio", kGreen}, {"visual", kBlue}};
  for (const auto& m : e.source_mass) c.bars.push_back({m.self, m.action_queries, m.proprio, m.visual});
  return c;
}

#endif  // FOCUSVLA_WITH_IMGCODECS

// The colour scale of a map: kept shares on [0, 1]; attention from 0 to its largest cell.
std::pair<double, double> scale_of(const PatchMap& m) {
  if (m.kind == "kept") return {0.0, 1.0};
  double high = 0;
  for (const auto& g : m.cameras)
    for (const double v : g.values) high = std::max(high, v);
  return {0.0, high};
}

// Writes <kind>_camera<c>[_block<i>].png for every camera; returns the file entries for the JSON.
nlohmann::json write_maps(const std::string& out, const PatchMap& map, const std::vector<torch::Tensor>& images,
                          double view_fraction, int block) {
  nlohmann::json files = nlohmann::json::array();
  const auto [low, high] = scale_of(map);
  for (size_t c = 0; c < map.cameras.size(); ++c) {
    char name[64];
    if (block < 0)
      std::snprintf(name, sizeof name, "%s_camera%zu.png", map.kind.c_str(), c);
    else
      std::snprintf(name, sizeof name, "%s_camera%zu_block%02d.png", map.kind.c_str(), c, block);
#ifdef FOCUSVLA_WITH_IMGCODECS
    write_png(out + "/" + name, heat_map(images[c], map.cameras[c], low, high, view_fraction));
#else
    (void)images;
    (void)view_fraction;
#endif
    files.push_back({{"file", name}, {"map", map.kind}, {"camera", c}, {"scale", {low, high}},
                     {"width", images[c].size(1)}, {"height", images[c].size(0)}});
    if (block >= 0) files.back()["block"] = block;
  }
  return files;
}

nlohmann::json write_pictures(const std::string& out, const Explanation& e, const std::vector<torch::Tensor>& images) {
#ifndef FOCUSVLA_WITH_IMGCODECS
  throw Error("explain: this build has no image encoder (OpenCV imgcodecs was not found): no pictures");
#endif
  nlohmann::json files = nlohmann::json::array();
  const auto add = [&](const nlohmann::json& more) {
    for (const auto& f : more) files.push_back(f);
  };
  for (const auto* map : {e.kept ? &*e.kept : nullptr, e.attention ? &*e.attention : nullptr})
    if (map) add(write_maps(out, *map, images, e.view_fraction, -1));
  for (size_t b = 0; b < e.kept_per_block.size(); ++b)
    add(write_maps(out, e.kept_per_block[b], images, e.view_fraction, static_cast<int>(b)));
  for (size_t b = 0; b < e.attention_per_block.size(); ++b)
    add(write_maps(out, e.attention_per_block[b], images, e.view_fraction, static_cast<int>(b)));
#ifdef FOCUSVLA_WITH_IMGCODECS
  if (!e.gates.empty() || !e.scalar_gates.empty()) {
    write_png(out + "/gates.png", draw_chart(gate_chart(e)));
    files.push_back({{"file", "gates.png"}, {"chart", "gates"}});
  }
  if (!e.source_mass.empty()) {
    write_png(out + "/sources.png", draw_chart(source_chart(e)));
    files.push_back({{"file", "sources.png"}, {"chart", "source_mass"}});
  }
#endif
  return files;
}

// ---------------------------------------------------------------------------------------------
// The terminal

std::string pct(double share) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g%%", 100.0 * share);
  return b;
}

void print_maps(const Explanation& e, const std::vector<std::string>& paths) {
  for (const auto* map : {e.kept ? &*e.kept : nullptr, e.attention ? &*e.attention : nullptr}) {
    if (!map) continue;
    std::printf("%-12s %s\n", map->kind.c_str(),
                map->kind == "kept"
                    ? "share of (block, head, action step) rows whose top-K kept the patch (colour scale 0 .. 1)"
                    : "softmax attention mass per patch, mean over blocks, heads and action steps (scale 0 .. max)");
    double total = map->prompt_token;
    for (const auto& g : map->cameras) total += g.sum();
    for (size_t c = 0; c < map->cameras.size(); ++c) {
      const PatchGrid& g = map->cameras[c];
      const auto top = std::max_element(g.values.begin(), g.values.end()) - g.values.begin();
      std::printf("  camera %zu   %-28s mean %.4g, max %.4g at row %lld col %lld, %s of the map\n", c,
                  fs::path(paths[c]).filename().string().c_str(), g.sum() / static_cast<double>(g.values.size()),
                  g.values[top], (long long)(top / g.cols), (long long)(top % g.cols),
                  pct(total > 0 ? g.sum() / total : 0).c_str());
    }
    std::printf("  prompt token (head position 0, not a patch): %.4g\n", map->prompt_token);
  }
}

void print_blocks(const Explanation& e) {
  const bool gates = !e.gates.empty(), scalar = !e.scalar_gates.empty(), mass = !e.source_mass.empty();
  if (!gates && !scalar && !mass) return;
  std::printf("\n  block");
  if (gates) std::printf("  %-7s %9s %9s %9s", "gate", "mean", "< 0.1", "> 0.9");
  if (scalar) std::printf("  %9s", "tanh(g)");
  if (mass) std::printf("  %9s %9s %9s %9s", "self", "queries", "proprio", "visual");
  std::printf("\n");
  for (int64_t b = 0; b < e.blocks; ++b) {
    std::printf("  %5lld", (long long)b);
    const auto i = static_cast<size_t>(b);
    if (gates && i < e.gates.size())
      std::printf("  %-7s %9.4f %9s %9s", e.gates[i].kind.c_str(), e.gates[i].mean, pct(e.gates[i].below_0_1).c_str(),
                  pct(e.gates[i].above_0_9).c_str());
    if (scalar && i < e.scalar_gates.size()) std::printf("  %9.4f", e.scalar_gates[i]);
    if (mass && i < e.source_mass.size())
      std::printf("  %9s %9s %9s %9s", pct(e.source_mass[i].self).c_str(), pct(e.source_mass[i].action_queries).c_str(),
                  pct(e.source_mass[i].proprio).c_str(), pct(e.source_mass[i].visual).c_str());
    std::printf("\n");
  }
}

void print_audit(const QuantizeAudit& q) {
  std::printf("\nquantize     %s vs %s: kept patches Jaccard mean %.4f (min %.4f); actions move %s mean, %s max "
              "of the action range\n",
              q.quantized_quantize.c_str(), q.reference_quantize.c_str(), q.kept_jaccard_mean, q.kept_jaccard_min,
              pct(q.action_mean_distance).c_str(), pct(q.action_max_distance).c_str());
  std::printf("  %5s %12s %12s %12s %12s\n", "block", "kept J mean", "kept J min", "gate |d| mean", "gate |d| max");
  for (const auto& b : q.blocks) {
    std::printf("  %5lld", (long long)b.block);
    if (b.has_kept)
      std::printf(" %12.4f %12.4f", b.kept_jaccard_mean, b.kept_jaccard_min);
    else
      std::printf(" %12s %12s", "-", "-");
    if (b.has_gate)
      std::printf(" %12.3g %12.3g", b.gate_mean_abs_change, b.gate_max_abs_change);
    else
      std::printf(" %12s %12s", "-", "-");
    std::printf("\n");
  }
}

void print_reliance(const Explanation& e) {
  if (e.ablations.empty()) return;
  std::printf("\nreliance     |a_ablated - a| / (q99 - q01), the share of the dataset's action range\n");
  std::printf("  %-24s %10s %10s  %s\n", "ablation", "mean", "max", "what changed");
  for (const auto& a : e.ablations)
    std::printf("  %-24s %10s %10s  %s\n", a.name.c_str(), pct(a.mean_distance).c_str(), pct(a.max_distance).c_str(),
                a.description.c_str());
}

}  // namespace

CLI::App* add_explain_command(CLI::App& app, ExplainArgs& a) {
  CLI::App* explain = app.add_subcommand(
      "explain",
      "Show where the policy looks and test whether it uses vision at all, on one observation. Writes to --out: "
      "per camera the image with a heat map on its 16 x 16 patch grid (kept_cameraN.png: FocusVLA, how often "
      "top-K kept each patch; attention_cameraN.png: the softmax attention mass each patch receives), "
      "gates.png (the gate per block), sources.png (attention mass per source, heads with one softmax) and "
      "explain.json; prints a table and a one-line verdict. The reliance test runs the policy again with the "
      "visual input ablated (gray cameras, visual tokens zeroed after the projector, cameras swapped, the head's "
      "visual states zeroed) and with the head's action queries zeroed, and gives each change of the actions as a "
      "share of the dataset's action range. Without --checkpoint: the demo checkpoint on the LIBERO sample, as "
      "`act`. See include/focusvla/policy/explain.h for every definition.");
  explain->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  add_policy_options(*explain, a.policy, "cpu");
  add_observation_options(*explain, a.obs);
  add_int_option(*explain, "--num-images", a.policy.num_images, 1, 16,
                 "cameras per observation (must equal the --image count)");
  explain->add_option("--out", a.out, "folder for the pictures and explain.json (created)")->required();
  explain->add_flag("--per-block", a.per_block, "also a heat map per block and camera");
  explain->add_flag("--no-reliance", a.no_reliance, "skip the reliance test (one act instead of six)");
  add_int_option(*explain, "--gray", a.gray, 0, 255, "the gray level of the gray-camera ablation (default 128)");
  explain->add_flag("--json", a.json, "print explain.json instead of the table");
  explain
      ->add_option("--compare-quantize", a.compare_quantize,
                   "also load the checkpoint quantized (int8 or fp8) and report, per head block, the overlap of the "
                   "kept top-K patch sets (Jaccard) and the change of the gates, and the action difference "
                   "(explain.json: quantize_audit; see include/focusvla/policy/quantize_audit.h)")
      ->check(CLI::IsMember({"int8", "w8a8", "fp8", "float8", "e4m3"}));
  return explain;
}

void run_explain(ExplainArgs a) {
  PolicyOptions options = policy_options(a.policy);
  const bool demo = use_demo_defaults("explain", a.policy, a.obs, options);
  check_cameras("explain", a.obs, a.policy.num_images, options);
  Observation obs;
  obs.instruction = a.obs.instruction;
  obs.proprio = a.obs.proprio.empty() ? std::vector<double>{} : parse_numbers(a.obs.proprio, "--proprio");
  for (const auto& path : a.obs.images) obs.images.push_back(read_image(path));
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec || !fs::is_directory(a.out)) throw Error("--out " + a.out + ": cannot create the folder (" + ec.message() + ")");

  const Policy policy = Policy::load(a.policy.checkpoint, options);
  ExplainOptions eo;
  eo.per_block = a.per_block;
  eo.reliance = !a.no_reliance;
  eo.gray = static_cast<uint8_t>(a.gray);
  const Explanation e = explain(policy, obs, eo);

  nlohmann::json j = explanation_json(e);
  j["checkpoint"] = a.policy.checkpoint;
  j["untrained_demo_weights"] = demo;
  j["instruction"] = obs.instruction;
  j["images"] = a.obs.images;
  j["settings"] = settings_json(policy.settings());
  std::optional<QuantizeAudit> audit;
  if (!a.compare_quantize.empty()) {
    PolicyOptions quantized = options;
    quantized.quantize = parse_quantize(a.compare_quantize, "--compare-quantize");
    audit = audit_quantization(policy, Policy::load(a.policy.checkpoint, quantized), obs);
    j["quantize_audit"] = audit_json(*audit);
  }
  j["files"] = write_pictures(a.out, e, obs.images);
  j["files"].push_back({{"file", "explain.json"}});
  std::ofstream file(a.out + "/explain.json");
  file << j.dump(1) << "\n";
  if (!file) throw Error(a.out + "/explain.json: cannot write");

  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  if (demo)
    std::printf("NOTE: demo checkpoint %s has RANDOM, UNTRAINED weights: the maps and the verdict describe them,\n"
                "      not a trained policy.\n\n",
                a.policy.checkpoint.c_str());
  std::printf("policy       %s (%s head, %lld camera(s), %lld blocks x %lld heads)\n", a.policy.checkpoint.c_str(),
              e.head.c_str(), (long long)e.cameras, (long long)e.blocks, (long long)e.heads);
  std::printf("grid         %lld x %lld patches per camera over %s of each image side (center crop %s)\n",
              (long long)e.grid_rows, (long long)e.grid_cols, pct(e.view_fraction).c_str(),
              policy.settings().center_crop ? "on" : "off");
  print_maps(e, a.obs.images);
  print_blocks(e);
  print_reliance(e);
  if (audit) print_audit(*audit);
  std::printf("\nverdict      %s\n", e.verdict.line.c_str());
  std::string written;
  for (const auto& f : j["files"]) written += (written.empty() ? "" : ", ") + f["file"].get<std::string>();
  std::printf("wrote        %s: %s\n", a.out.c_str(), written.c_str());
}

}  // namespace focusvla::cli
