// Policy::load: a checkpoint directory to a ready Policy::Impl (policy_impl.h), every option
// resolved (PolicySettings) and checked before the first tensor is read where it can be.

#include <cmath>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/io/checkpoint.h"
#include "focusvla/policy/batch_buckets.h"
#include "focusvla/policy/sequence.h"
#include "policy_impl.h"
#include "quantize_plan.h"

namespace focusvla {
namespace {

using Clock = Policy::Impl::Clock;
constexpr auto ms_since = &Policy::Impl::ms_since;

// The prompt format the reference evaluates this checkpoint with (SPEC 6): get_vla_action uses
// the Qwen chat template whenever the backbone is the Qwen2.5 mini-VLM (use_minivlm=True, the
// default of its LIBERO and CALVIN evaluations) and `In: ... Out:` for the OpenVLA backbones.
std::pair<PromptFormat, std::string> resolve_prompt_format(const std::string& requested, const io::VlaConfig& config) {
  if (requested != "auto") return {parse_prompt_format(requested), "option"};
  const std::string& backbone = config.llm_backbone_id;
  if (backbone.empty()) return {PromptFormat::qwen_chat, "checkpoint: Qwen2 text_config (no llm_backbone_id)"};
  const bool qwen = backbone.rfind("qwen", 0) == 0;
  return {qwen ? PromptFormat::qwen_chat : PromptFormat::openvla, "checkpoint: llm_backbone_id " + backbone};
}


// The checkpoint's dtype (its decoder weights' as stored: config.json's torch_dtype says bf16
// whatever the weights are) where the device computes it natively, float32 elsewhere.
std::pair<torch::ScalarType, std::string> resolve_dtype(const std::optional<torch::ScalarType>& requested,
                                                         const io::StateDict& model, const torch::Device& device) {
  if (requested) return {*requested, "option"};
  const std::string key = "language_model.model.embed_tokens.weight";
  check(model.contains(key), key, "missing from the checkpoint's weights");
  const torch::ScalarType stored = model.at(key).scalar_type();
  const std::string checkpoint = "checkpoint " + dtype_name(stored);
  if (stored != torch::kBFloat16 && stored != torch::kFloat16) return {torch::kFloat32, checkpoint};
  if (device.is_cuda()) return {stored, checkpoint + " on CUDA"};
  if (stored == torch::kBFloat16 && nn::cpu_has_native_bf16()) return {stored, checkpoint + ", CPU with native bf16"};
  return {torch::kFloat32, checkpoint + ", float32 on a CPU without native " + dtype_name(stored)};
}



}  // namespace

Policy Policy::load(const std::string& directory, const PolicyOptions& requested) {
  // Where load time goes, for the info log: (phase, ms).
  const auto load_start = Clock::now();
  auto lap_start = load_start;
  std::string phases;
  const auto lap = [&](const char* phase) {
    phases += (phases.empty() ? "" : ", ") + std::string(phase) + " " + std::to_string(std::lround(ms_since(lap_start))) + " ms";
    lap_start = Clock::now();
  };
  PolicyOptions options = requested;
  // "cuda" means the current CUDA device: name it (cuda:0, ...), as every tensor reports its
  // device with the index and caches keyed by device (RoPE tables, normalization statistics)
  // must find their entries, never rebuild them (from host memory) under a CUDA graph capture.
  if (options.device.is_cuda()) {
    const int64_t count = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    check(count > 0, "PolicyOptions::device " + options.device.str(), "CUDA requested, but no CUDA device is available");
    check(!options.device.has_index() || options.device.index() < count, "PolicyOptions::device " + options.device.str(),
          "no such CUDA device (" + std::to_string(count) + " available)");
    if (!options.device.has_index()) options.device = torch::empty({0}, torch::TensorOptions().device(options.device)).device();
  } else {
    check(options.device.is_cpu(), "PolicyOptions::device " + options.device.str(), "only cpu and cuda are supported");
  }
  auto impl = std::make_shared<Impl>();
  impl->options = options;
  if (options.threads > 0) torch::set_num_threads(options.threads);
  if (options.prompt_format != "auto") (void)parse_prompt_format(options.prompt_format);  // named error before I/O
  check(options.normalization == "bounds_q99" || options.normalization == "bounds", "PolicyOptions::normalization",
        "'" + options.normalization + "' is not 'bounds_q99' or 'bounds'");
  check(!options.dtype || *options.dtype == torch::kFloat32 || *options.dtype == torch::kBFloat16 ||
            *options.dtype == torch::kFloat16,
        "PolicyOptions::dtype", "must be float32, bfloat16 or float16");
  const nn::MatmulMode quantized_mode = policy::resolve_quantize(options.quantize, options.device);
  impl->batch_buckets = policy::resolve_batch_buckets(options.batch_buckets, options.device, options.cuda_graphs);
  check(options.max_cached_shapes >= 1, "PolicyOptions::max_cached_shapes",
        std::to_string(options.max_cached_shapes) + " is not 1 or more");

  const io::Checkpoint ckpt = io::Checkpoint::open(directory);
  lap("checkpoint files");
  PolicySettings& settings = impl->settings;
  std::tie(impl->prompt_format, settings.prompt_format_source) = resolve_prompt_format(options.prompt_format, ckpt.config);
  std::tie(impl->dtype, settings.dtype_source) = resolve_dtype(options.dtype, ckpt.model, options.device);
  check(!ckpt.files.action_head.empty(), directory, "no action head (action_head--*checkpoint.pt)");
  check(ckpt.preprocessor.has_value(), directory, "no preprocessor_config.json");

  // Statistics: the unnorm_key must name one dataset; with one dataset it may be left out.
  std::string keys;
  for (const auto& kv : ckpt.norm_stats) keys += (keys.empty() ? "" : ", ") + kv.first;
  if (options.unnorm_key.empty()) {
    check(ckpt.norm_stats.size() == 1, directory,
          "holds statistics of " + std::to_string(ckpt.norm_stats.size()) +
              " datasets; set PolicyOptions::unnorm_key to one of: " + keys);
    impl->unnorm_key = ckpt.norm_stats.begin()->first;
  } else {
    check(ckpt.norm_stats.count(options.unnorm_key) != 0, "unnorm_key '" + options.unnorm_key + "'",
          "not in the checkpoint's statistics; choose one of: " + keys);
    impl->unnorm_key = options.unnorm_key;
  }
  const io::DatasetStats& stats = ckpt.norm_stats.at(impl->unnorm_key);
  impl->action_normalizer =
      policy::Normalizer::from_stats(stats.action, options.normalization, impl->unnorm_key + " action statistics");

  // The released VLA-Adapter config.json files have no num_images_in_input: then (and without
  // PolicyOptions::num_images) each call's image count is the camera count.
  impl->num_images = options.num_images > 0 ? options.num_images : ckpt.config.num_images_in_input;
  impl->cameras_source = options.num_images > 0 ? "PolicyOptions::num_images" : "config.json num_images_in_input";

  const auto tensor_options = torch::TensorOptions().dtype(impl->dtype).device(options.device);
  impl->tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::from_directory(directory));
  lap("tokenizer");
  vision::PreprocessOptions pre;
  pre.center_crop = options.center_crop;
  // The reference's get_vla_action resizes every camera image that is not the model's size
  // (resize_image_for_policy), whether or not it then center-crops (SPEC 3.1).
  pre.libero_resize = true;
  pre.jpeg_roundtrip = options.jpeg_roundtrip;
  pre.device = options.device;
  impl->preprocessor = std::make_unique<vision::ImagePreprocessor>(*ckpt.preprocessor, pre);
  // Quantized block by block as the encoders load, so that their float weights are never all held
  // at once, and released before the decoder's load (docs/QUANTIZATION.md, Memory).
  int64_t quantized_vision = 0;
  impl->vision = vision::VisionTower::load(ckpt.model, ckpt.config, tensor_options,
                                           policy::quantize_while_loading(quantized_mode, &quantized_vision));
  check(impl->preprocessor->num_encoders() == static_cast<int64_t>(impl->vision->num_encoders()) &&
            impl->preprocessor->image_size() == impl->vision->config.image_size(),
        directory,
        "preprocessor_config.json prepares " + std::to_string(impl->preprocessor->num_encoders()) + " images of " +
            std::to_string(impl->preprocessor->image_size()) + "px, config.json has " +
            std::to_string(impl->vision->num_encoders()) + " vision encoders of " +
            std::to_string(impl->vision->config.image_size()) + "px");
  quantized_vision += policy::quantize_component(*impl->vision->vision_backbone, quantized_mode);
  policy::use_fast_vision_kernels(*impl->vision->vision_backbone, quantized_mode);
  lap("vision");
  // The projector stays in the compute dtype (docs/QUANTIZATION.md): one per-token scale over the
  // concatenated DINOv2 + SigLIP features (two encoders' ranges in one token) tripled its output
  // error (3.8e-2 vs bf16's 1.1e-2 of fp32 at full size), for ~1.5% of an act's time.
  const int64_t quantized_projector = 0;
  int64_t quantized_llm = 0;  // layer by layer as the decoder loads, as the encoders
  impl->llm = llm::Qwen2ModelImpl::load(ckpt.model, ckpt.config.text_config, tensor_options,
                                        llm::Qwen2ModelImpl::kCheckpointPrefix,
                                        policy::quantize_while_loading(quantized_mode, &quantized_llm));
  quantized_llm += policy::quantize_component(*impl->llm->layers, quantized_mode);
  impl->max_positions = ckpt.config.text_config.max_position_embeddings;
  const torch::Tensor& queries = ckpt.model.at("action_queries.weight");
  check(queries.dim() == 2 && queries.size(1) == ckpt.config.text_config.hidden_size, "action_queries.weight",
        "expected (N, " + std::to_string(ckpt.config.text_config.hidden_size) + "), found " + io::shape_string(queries.sizes()));
  impl->action_queries = queries.to(tensor_options).clone();
  impl->stop_embedding = impl->llm->embed(torch::tensor({policy::kStopTokenId}, torch::kInt64));
  // The RoPE table for every position once, so that no call extends (reallocates) it under a
  // captured CUDA graph.
  (void)impl->llm->rope_tables(impl->max_positions, options.device, impl->dtype);
  lap("llm");
  impl->head = policy::load_head(ckpt.action_head, ckpt.config, tensor_options);
  check(impl->head->action_dim() == static_cast<int64_t>(impl->action_normalizer->dim()), directory,
        "the action head predicts " + std::to_string(impl->head->action_dim()) + " dims but '" +
            impl->unnorm_key + "' has statistics for " + std::to_string(impl->action_normalizer->dim()));
  if (!ckpt.files.proprio_projector.empty()) {
    impl->proprio_projector = policy::ProprioProjectorImpl::load(ckpt.proprio_projector, tensor_options);
    check(stats.proprio.has_value(), impl->unnorm_key, "has no proprio statistics but the checkpoint has a proprio projector");
    impl->proprio_normalizer =
        policy::Normalizer::from_stats(*stats.proprio, options.normalization, impl->unnorm_key + " proprio statistics");
    check(static_cast<int64_t>(impl->proprio_normalizer->dim()) == impl->proprio_projector->proprio_dim(),
          impl->unnorm_key + " proprio statistics",
          "have " + std::to_string(impl->proprio_normalizer->dim()) + " dims, the projector takes " +
              std::to_string(impl->proprio_projector->proprio_dim()));
  }
  lap("head");
  // bf16 on a CPU: fp32 matmuls of fp32 weight copies where bf16 would be emulated (see
  // PolicyOptions::cpu_bf16_matmul), made once here.
  const bool fp32_matmuls = nn::bf16_matmul_in_fp32(options.cpu_bf16_matmul, impl->llm->dtype(), impl->llm->device());
  nn::set_cpu_bf16_matmul(*impl->llm, options.cpu_bf16_matmul);
  nn::set_cpu_bf16_matmul(*impl->vision, options.cpu_bf16_matmul);
  nn::set_cpu_bf16_matmul(impl->head->module(), options.cpu_bf16_matmul);
  if (impl->proprio_projector) nn::set_cpu_bf16_matmul(*impl->proprio_projector, options.cpu_bf16_matmul);
  if (fp32_matmuls) {
    log_info("bf16 on a CPU without native bf16 dot products: linear layers run as fp32 matmuls");
    lap("fp32 weight copies");
  }
  impl->runner = std::make_unique<policy::GraphRunner>(
      policy::GraphRunner::Options{options.device, options.cuda_graphs, options.max_cached_shapes});
  settings.head = impl->head->name();
  settings.prompt_format = to_string(impl->prompt_format);
  settings.center_crop = options.center_crop;
  settings.jpeg_roundtrip = options.jpeg_roundtrip;
  settings.dtype = impl->dtype;
  settings.device = options.device;
  settings.matmul = options.device.is_cuda()              ? "cuda"
                    : impl->dtype == torch::kFloat32        ? "fp32"
                    : impl->dtype == torch::kFloat16        ? "native-fp16"
                    : fp32_matmuls                          ? "fp32-copies"
                                                            : "native-bf16";
  settings.unnorm_key = impl->unnorm_key;
  settings.normalization = options.normalization;
  settings.cameras = impl->num_images;
  settings.proprio_dim = impl->proprio_projector ? impl->proprio_projector->proprio_dim() : 0;
  settings.chunk = impl->head->chunk();
  settings.action_dim = impl->head->action_dim();
  settings.batch_buckets = impl->batch_buckets;
  settings.quantize = nn::is_quantized(quantized_mode) ? nn::matmul_mode_name(quantized_mode) : "none";
  settings.quantized_layers = quantized_vision + quantized_projector + quantized_llm;
  settings.quantize_detail = policy::quantize_detail(quantized_mode, quantized_vision, quantized_projector, quantized_llm,
                                                     impl->dtype, impl->vision->vision_backbone->side_by_side);
  if (quantized_mode == nn::MatmulMode::kInt8 && !nn::cpu_has_int8_dot())
    log_warn("quantize int8 on a CPU without int8 dot products (AVX512-VNNI / AVX-VNNI / AMX): weights are 7-bit "
             "(8-bit ones saturate its u8 x s8 instruction) and int8 GEMMs gain less over float ones here; see "
             "docs/QUANTIZATION.md for the measured speed");
  log_info(directory + ": loaded (" + impl->unnorm_key + ", " +
           (impl->num_images > 0 ? std::to_string(impl->num_images) : std::string("per-call")) + " camera(s), " +
           settings.prompt_format + " prompt, center crop " + (settings.center_crop ? "on" : "off") +
           ", JPEG round trip " + (settings.jpeg_roundtrip ? "on" : "off") + ", " +
           dtype_name(impl->dtype) + ", matmul " + settings.matmul + ", quantize " + settings.quantize + ") in " +
           std::to_string(std::lround(ms_since(load_start))) + " ms: " + phases);
  return Policy(impl);
}

}  // namespace focusvla
