#pragma once
// The one API robot code links against (SPEC sections 1, 2, 6, 8, 10):
//
//   auto policy = focusvla::Policy::load("/path/to/checkpoint");  // the reference's evaluation settings
//   focusvla::ActionChunk chunk = policy.act({agentview, wrist}, "put the bowl on the plate", proprio);
//   // chunk.actions: 8 x 7 un-normalized actions; chunk.timing: the time of each stage
//
// One act: images -> preprocess -> vision tower -> visual embeddings; instruction -> prompt ->
// token ids; sequence [t_0] + visual + [t_1 ..] + 64 action queries + [stop]; Qwen2 with all
// hidden states; conditioning one position before each token (SPEC 8); action head; proprio
// normalized in and actions un-normalized out with the dataset's statistics (SPEC 10).
//
// Thread safety: a Policy may be shared between threads; calls to act / act_batch on one Policy
// are serialized by an internal mutex (one forward at a time). Copies share the same model.

#include <torch/torch.h>

#include <Eigen/Core>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "focusvla/core/tap.h"
#include "focusvla/nn/matmul.h"
#include "focusvla/nn/quantize.h"

namespace focusvla {

// What to load and how to run it. The defaults reproduce the reference's evaluation of a released
// checkpoint (SPEC 6, `experiments/robot/openvla_utils.py` get_vla_action with
// `run_libero_eval.py`'s GenerateConfig): its prompt format, its 0.9 center crop, its bf16 where
// the device computes bf16 natively. Policy::settings() reports what each resolved to.
struct PolicyOptions {
  torch::Device device = torch::kCPU;
  // Unset (the default): the checkpoint's dtype (config.json torch_dtype; bf16 for released
  // models) where the device computes it natively (CUDA; a CPU with native bf16 dot products,
  // where bf16 is ~2x faster than fp32 and bit-identical to the reference's bf16), float32
  // elsewhere. Or float32, bfloat16, float16 explicitly.
  std::optional<torch::ScalarType> dtype;
  // Which dataset's statistics (un)normalize; required when the checkpoint holds several
  // (config.json norm_stats plus dataset_statistics.json).
  std::string unnorm_key;
  // "auto" (the default): the format the reference evaluates this checkpoint with: "qwen-chat"
  // for the Qwen2.5 backbone (the reference's use_minivlm=True), "openvla" for the OpenVLA
  // backbones (llm_backbone_id llama2 / mistral / ...). Or "openvla"
  // (`In: What action should the robot take to {task}?\nOut:`) / "qwen-chat" explicitly.
  std::string prompt_format = "auto";
  // Cameras per observation; 0: config.json's num_images_in_input, and where config.json has none
  // (the released VLA-Adapter checkpoints) each call's image count (all observations of one
  // act_batch the same).
  int64_t num_images = 0;
  // The LIBERO pipeline's 0.9-area center crop (SPEC 3.1), on by default as in the reference's
  // evaluation (GenerateConfig.center_crop = True); off for policies trained without crop
  // augmentation.
  bool center_crop = true;
  // Camera images that are not the model's size (LIBERO renders 256x256) are resized as the
  // reference's `resize_image_for_policy` does, with or without the center crop: TF's JPEG encode /
  // decode round trip (vision/jpeg.h), then the Lanczos-3 resize. Off: the resize alone, for
  // policies whose training frames were never JPEG-compressed.
  bool jpeg_roundtrip = true;
  // "bounds_q99" (LIBERO) or "bounds" (min/max).
  std::string normalization = "bounds_q99";
  // Return the indices each FocusVLA block kept and its gate values.
  bool diagnostics = false;
  // CPU intra-op threads; 0 leaves LibTorch's setting.
  int threads = 0;
  // CUDA: the second act of an input shape (batch, cameras, prompt lengths) is captured as a CUDA
  // graph and later calls of that shape replay it (one launch instead of ~2,000). Falls back to
  // eager execution, with a warning once per shape, when capture fails. Ignored on the CPU.
  bool cuda_graphs = true;
  // bf16 on the CPU: kAuto runs bf16 linear layers as fp32 matmuls of fp32 weight copies (made at
  // load) on CPUs without native bf16 dot products, where LibTorch emulates bf16 matmuls ~3x
  // slower; kNative always uses LibTorch's bf16 kernels (bit-identical to PyTorch's bf16 on the
  // same CPU). See nn::CpuBf16Matmul. The fp32 copies take 2x the bf16 weights' memory.
  nn::CpuBf16Matmul cpu_bf16_matmul = nn::CpuBf16Matmul::kAuto;
  // Input shapes whose buffers (and CUDA graphs) are kept; the least recently used goes first.
  int max_cached_shapes = 8;
  // Batch sizes an act_batch is padded up to: a call of 3 observations runs as 4 when 4 is the
  // smallest bucket that holds it (the added rows repeat its last observation; their actions are
  // dropped), so traffic of mixed batch sizes reuses a few shapes (a CUDA graph each) instead of
  // capturing one per size. Its rows are staged longest prompt first, so that the same prompts in
  // another order are the same shape. A call larger than the largest bucket runs at its own size.
  // Empty (the default): {1, 2, 4, 8} on CUDA with cuda_graphs, none elsewhere (on the CPU,
  // padding costs compute and no graph is saved). Each entry >= 1; sorted, duplicates dropped.
  std::vector<int64_t> batch_buckets;
  // Quantized linear layers, made at load from the checkpoint's weights (nothing is written; the
  // float weights of quantized layers are released). kInt8 on a CPU: W8A8 (int8 weights and
  // per-token int8 activations); on CUDA: int8 weight-only. kFp8: CUDA with compute capability
  // 8.9+ (Ada, Hopper), int8 weight-only on older GPUs (a warning), an Error on a CPU. Which
  // layers: the vision encoders' and the decoder's linear layers; the projector, the head, norms,
  // embeddings and the patch embeddings keep the compute dtype (docs/QUANTIZATION.md: measured).
  nn::Quantize quantize = nn::Quantize::kNone;
};

// What a loaded Policy runs with: every option after resolution, and why (Policy::settings()).
struct PolicySettings {
  std::string head;                  // "vla-adapter", "vla-adapter-pro" or "focusvla"
  std::string prompt_format;         // "openvla" or "qwen-chat"
  std::string prompt_format_source;  // e.g. "checkpoint: llm_backbone_id qwen25-0_5b-extra" or "option"
  bool center_crop = true;
  // Whether images that are not the model's size go through the JPEG round trip before the resize
  // (PolicyOptions::jpeg_roundtrip).
  bool jpeg_roundtrip = true;
  torch::ScalarType dtype = torch::kFloat32;
  std::string dtype_source;          // e.g. "checkpoint bfloat16, CPU with native bf16" or "option"
  torch::Device device = torch::kCPU;
  // How linear layers multiply: "cuda", "fp32" (float32 weights), "native-bf16" (LibTorch's bf16
  // kernels) or "fp32-copies" (bf16 weights multiplied as fp32 copies, CPUs without native bf16).
  std::string matmul;
  std::string unnorm_key;
  std::string normalization;         // "bounds_q99" or "bounds"
  int64_t cameras = 0;               // 0: follows each call (no fixed camera count)
  int64_t proprio_dim = 0;           // 0 without a proprio projector
  int64_t chunk = 0, action_dim = 0;
  // Quantization: "none", or the mode the quantized layers run ("int8" = CPU W8A8,
  // "int8-weight-only", "fp8"), how many linear layers run it, and what it means here (e.g.
  // "W8A8, 8-bit weights (CPU int8 dot products); linear layers: vision encoders 196, projector 0,
  // llm 168; projector, head, norms, embeddings, patch embeddings in bfloat16").
  std::string quantize = "none";
  int64_t quantized_layers = 0;
  std::string quantize_detail;
  // The batch sizes calls are padded up to (PolicyOptions::batch_buckets); empty: none.
  std::vector<int64_t> batch_buckets;
};

// The spelling of a dtype in settings, logs and --dtype: "float32", "bfloat16", "float16".
std::string dtype_name(torch::ScalarType dtype);

// The settings as JSON, as `focusvla act --json` and the server's metadata give them:
// {"head", "prompt_format", "prompt_format_source", "center_crop", "jpeg_roundtrip", "dtype",
//  "dtype_source", "device", "matmul", "unnorm_key", "normalization", "cameras", "proprio_dim",
//  "quantize", "quantized_layers", "quantize_detail", "batch_buckets"}.
nlohmann::json settings_json(const PolicySettings& settings);

// The prompt an instruction becomes, and its token ids (no BOS / EOS).
struct PromptText {
  std::string text;
  std::vector<int64_t> ids;
};

// The camera images of an observation already in the model's staging layout (Policy::prepare).
struct PreparedImages;

// One observation for act_batch.
struct Observation {
  std::vector<torch::Tensor> images;  // uint8 (H, W, 3) RGB, one per camera, in checkpoint order
  std::string instruction;
  std::vector<double> proprio;        // raw robot state; empty when the checkpoint has no proprio projector
  // Set by Policy::prepare: `images` after the LIBERO steps and resizes, made ahead of the act.
  // act / act_batch copy them instead of preprocessing again, when the policy that prepared them
  // acts and `images` still holds the same tensors (a new list is preprocessed again; an image
  // changed in place is not noticed: prepare again, or reset this).
  std::shared_ptr<const PreparedImages> prepared;
};

// Milliseconds per stage of one call. preprocess = the host part (checks, tokenizer, LIBERO steps
// and Pillow resize into the staging buffer, upload) plus normalization on the device; head
// includes the copy of the actions back to the host. On a GPU the stages are timed with CUDA
// events (no extra synchronization). vision = the two encoders, projector = the MLP projector,
// llm = sequence assembly and the decoder, head = proprio projector and action head. When the
// call replayed a CUDA graph, the device work is one launch without stage boundaries: vision_ms,
// projector_ms, llm_ms and head_ms are NaN, and device_ms holds their sum (normalization included).
struct StageTiming {
  double preprocess_ms = 0, vision_ms = 0, projector_ms = 0, llm_ms = 0, head_ms = 0, total_ms = 0;
  double device_ms = 0;    // preprocess normalization + vision + llm + head on the device
  bool cuda_graph = false;  // this call replayed a CUDA graph
};

// A call's stage times under the names every front end reports them by, in this order:
// preprocess_ms, vision_ms, projector_ms, llm_ms, head_ms, device_ms, total_ms (NaN where a CUDA
// graph replay has no stage boundaries). `focusvla act --json` ("timing"), the server's
// "server_timing", Python's info["timing"] and the Ray app's replies are these (docs/OPTIONS.md).
std::vector<std::pair<std::string, double>> timing_fields(const StageTiming& timing);

struct ActionChunk {
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Matrix actions;     // chunk x action_dim, un-normalized
  Matrix normalized;  // the head's output, in [-1, 1] where trained
  StageTiming timing;
  // With PolicyOptions::diagnostics and a FocusVLA head, per block: (heads, chunk, K) kept
  // visual positions and the gate values.
  std::vector<torch::Tensor> kept_indices;
  std::vector<torch::Tensor> gates;
};

class Policy {
 public:
  // Loads a checkpoint directory in the VLA-Adapter release layout (SPEC 2). Throws Error naming
  // the file and problem: missing parts, mis-shaped weights, unknown unnorm_key (with the list),
  // an unknown prompt format, ... Nothing is half loaded: a Policy exists only when all loaded.
  static Policy load(const std::string& directory, const PolicyOptions& options = {});

  // One observation. images: uint8 (H, W, 3), one per camera. Throws Error on a wrong camera
  // count, image type or shape, an empty instruction, a proprio vector of the wrong length or
  // with NaN / Inf, or a sequence longer than the model's position limit.
  ActionChunk act(const std::vector<torch::Tensor>& images, const std::string& instruction,
                  const std::vector<double>& proprio = {}) const;
  // Several observations in one forward (right-padded); each result equals its own act() within
  // rounding.
  std::vector<ActionChunk> act_batch(const std::vector<Observation>& batch) const;

  // The fixed camera count (config.json num_images_in_input or PolicyOptions::num_images); 0:
  // follows each call (any count >= 1, the same for all observations of one act_batch).
  int64_t num_images() const;
  int64_t chunk_size() const;
  int64_t action_dim() const;
  int64_t proprio_dim() const;  // 0 without a proprio projector
  int64_t image_size() const;   // the model's camera image size (224); other sizes are resized
  std::string head_kind() const;  // "vla-adapter", "vla-adapter-pro" or "focusvla"
  const std::string& unnorm_key() const;
  // The options as given to load.
  const PolicyOptions& options() const;
  // What they resolved to (prompt format, crop, dtype, matmul mode, ...).
  const PolicySettings& settings() const;
  // The prompt `instruction` becomes and its token ids, exactly as act() builds them. Throws Error
  // as act() does for an empty instruction or invalid UTF-8.
  PromptText prompt(const std::string& instruction) const;
  // Every check act() makes before any work (camera count and images, instruction and its tokens,
  // proprio, sequence length), without running anything and without the policy's lock: a server
  // validates a request on its io thread so one bad request never spoils a batch. Throws Error.
  void validate(const Observation& observation) const;
  // validate(), then the host work of an act done ahead: the camera images through the LIBERO
  // steps and the resizes into the staging layout (milliseconds per camera; 256x256 LIBERO frames
  // the most), returned in Observation::prepared. Like validate, without the policy's lock, from
  // any thread: a server prepares each request on its io thread while the batch before it runs
  // (staging overlaps the forward), and the act that follows only copies the prepared pixels.
  // Actions are the same as for the unprepared observation, bit for bit. Throws Error.
  Observation prepare(Observation observation) const;
  // Runs the input shapes a server will see before its first request: for each batch bucket
  // (batch 1 when there are none), an act_batch of that many blank camera images (the model's
  // size) with `instruction` and a zero proprio; on CUDA with graphs each twice, so that the
  // graph is captured. Their buffers stay cached (max_cached_shapes; a warning when the buckets
  // do not fit). `cameras`: 0 for the policy's fixed count (num_images()), required where the
  // count follows each call. Returns the wall time in ms. Throws Error as act() does.
  double warm_up(const std::string& instruction, int64_t cameras = 0) const;
  // Input shapes whose buffers (and CUDA graphs) are cached now (at most max_cached_shapes); without
  // the policy's lock (a server's /stats reads it during a forward).
  int64_t cached_shapes() const;
  // How the last call ran: "cpu", "cuda-eager" or "cuda-graph".
  std::string last_execution() const;

  // Named intermediates of every later call (see core/tap.h), with the checkpoint's module paths:
  // "vision.features", "vision.output", "vision.featurizer.blocks.22", "llm.layers.3",
  // "llm.layers.3.attn_norm", "llm.norm", "head.blocks.7", "head.blocks.7.kept", ... so that a
  // whole act can be diffed against PyTorch forward hooks layer by layer. Tensors are valid
  // during the callback only. While a tap is set, calls run eagerly (no CUDA graph replay).
  // An empty Tap removes it. Policy-level names: "conditioning.visual" (B, layers + 1, Nv, D) and
  // "conditioning.queries" (B, layers + 1, Nq, D), the head's inputs (SPEC 8).
  void set_tap(Tap tap);

  // Diagnostics (policy/explain.h is built on it): one observation with `tap` and
  // `intervention` for this call only. Other calls never see them (they are installed and
  // removed under the call lock; the Policy-wide tap of set_tap still runs too), and the call
  // runs eagerly. Intervention points (core/tap.h), each replacing what flows on:
  //   "vision.output"         (B, Nv, D) the projector output, before it enters the sequence
  //   "conditioning.visual"   (B, layers + 1, Nv, D) the head's visual states of every layer
  //   "conditioning.queries"  (B, layers + 1, Nq, D) the head's action-query states
  // Throws Error as act() does, or when a replacement has the wrong shape.
  ActionChunk act_traced(const Observation& observation, const Tap& tap, const Intervention& intervention = {}) const;

  struct Impl;

 private:
  explicit Policy(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace focusvla
