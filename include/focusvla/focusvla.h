/*
 * focusvla's C ABI: FocusVLA / VLA-Adapter policies from C, or from any language with a C FFI
 * (Rust, Go, C#, Julia, ROS nodes, ...). Plain C99: opaque handles, fixed-width integers, no C++
 * type crosses the boundary, no exception escapes it.
 *
 *   focusvla_policy* policy = NULL;
 *   focusvla_policy_options options;
 *   focusvla_policy_options_init(&options);
 *   options.unnorm_key = "libero_spatial_no_noops";
 *   if (focusvla_policy_load("/path/to/checkpoint", &options, &policy) != FOCUSVLA_OK) {
 *     fprintf(stderr, "%s\n", focusvla_last_error());
 *   }
 *   focusvla_image cameras[2] = {{agentview, 224, 224, 224 * 3}, {wrist, 224, 224, 224 * 3}};
 *   double actions[8 * 7];
 *   focusvla_policy_act(policy, cameras, 2, "put the bowl on the plate", state, 8, actions, 8 * 7);
 *   focusvla_policy_free(policy);
 *
 * Every function that can fail returns a focusvla_status; on failure focusvla_last_error() holds
 * the message (naming the thing and the problem, as the C++ library's focusvla::Error) until the
 * next failing call on the same thread. Outputs are written only on success. A policy handle may
 * be shared between threads (calls on it are serialized inside).
 */
#ifndef FOCUSVLA_FOCUSVLA_H_
#define FOCUSVLA_FOCUSVLA_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FOCUSVLA_API __attribute__((visibility("default")))
#else
#define FOCUSVLA_API
#endif

/* No exception crosses the boundary: from C++ every entry point is noexcept. */
#ifdef __cplusplus
#define FOCUSVLA_NOEXCEPT noexcept
#else
#define FOCUSVLA_NOEXCEPT
#endif

typedef enum focusvla_status {
  FOCUSVLA_OK = 0,
  FOCUSVLA_ERROR_INVALID_ARGUMENT = 1, /* a NULL handle or pointer, a negative size, ... */
  FOCUSVLA_ERROR_BAD_INPUT = 2,        /* the library refused it: a bad file, image, state, ... */
  FOCUSVLA_ERROR_BUFFER_TOO_SMALL = 3, /* out_capacity below chunk_size * action_dim */
  FOCUSVLA_ERROR_INTERNAL = 4          /* anything else (out of memory, a bug) */
} focusvla_status;

/* A loaded policy (focusvla::Policy). */
typedef struct focusvla_policy focusvla_policy;

/* Load options: every zero / NULL field means "default" (the reference's evaluation settings for
 * the checkpoint, as focusvla::PolicyOptions), so a zero-filled struct (`= {0}`) and one from
 * focusvla_policy_options_init load the same policy. struct_size lets later versions add fields at
 * the end: focusvla_policy_options_init sets it to sizeof(focusvla_policy_options); 0 means this
 * header's size; fields past a smaller size are defaults; a larger size than the library knows is
 * an error (FOCUSVLA_ERROR_INVALID_ARGUMENT). */
typedef struct focusvla_policy_options {
  uint32_t struct_size;      /* sizeof(focusvla_policy_options), or 0 */
  const char* device;        /* "cpu" (default), "cuda", "cuda:N", "auto" (cuda when present) */
  const char* dtype;         /* NULL / "auto" (default), "float32", "bfloat16", "float16" (and the
                              * aliases of docs/OPTIONS.md: fp32, bf16, fp16, ...) */
  const char* unnorm_key;    /* dataset statistics; required when the checkpoint has several */
  const char* prompt_format; /* NULL / "auto" (default), "openvla", "qwen-chat" */
  int32_t no_center_crop;    /* 0 (default): the LIBERO 0.9 center crop; 1: none */
  int32_t num_images;        /* cameras; 0 (default): config.json's num_images_in_input, and where it
                              * has none (released VLA-Adapter checkpoints) each call's n_images */
  int32_t threads;           /* CPU intra-op threads; 0 (default): LibTorch's setting */
  const char* quantize;      /* NULL / "none" (default), "int8" (CPU: W8A8; CUDA: weight-only),
                                "fp8" (CUDA compute capability 8.9+); see docs/QUANTIZATION.md */
  int32_t no_jpeg_roundtrip; /* 0 (default): images that are not the model's size go through TF's
                              * JPEG round trip before the LIBERO resize, as the reference; 1: not */
  int32_t no_cuda_graphs;    /* 0 (default): CUDA graphs replay repeated input shapes; 1: eager */
  const char* normalization; /* NULL / "bounds_q99" (default, LIBERO), "bounds" (min / max) */
  int32_t max_cached_shapes; /* input shapes whose buffers / CUDA graphs are kept; 0: default (8) */
} focusvla_policy_options;

/* One camera image: 8-bit RGB, interleaved (3 bytes per pixel), `row_stride` bytes from one row
 * to the next (>= 3 * width; larger for padded rows). The data is read during the call only. */
typedef struct focusvla_image {
  const uint8_t* data;
  int32_t height;
  int32_t width;
  int64_t row_stride;
} focusvla_image;

FOCUSVLA_API const char* focusvla_version(void) FOCUSVLA_NOEXCEPT;
/* The message of the last failed call on this thread ("" when none failed yet). */
FOCUSVLA_API const char* focusvla_last_error(void) FOCUSVLA_NOEXCEPT;

FOCUSVLA_API void focusvla_policy_options_init(focusvla_policy_options* options) FOCUSVLA_NOEXCEPT;
/* Loads a checkpoint directory (VLA-Adapter release layout). options may be NULL (defaults).
 * On success *out holds a handle to free with focusvla_policy_free; on failure *out is NULL. */
FOCUSVLA_API focusvla_status focusvla_policy_load(const char* path, const focusvla_policy_options* options,
                                                  focusvla_policy** out) FOCUSVLA_NOEXCEPT;
/* One observation -> the un-normalized action chunk, row-major (chunk_size x action_dim) into
 * out[0 .. chunk_size * action_dim). images: n_images cameras in the checkpoint's order;
 * instruction: UTF-8, NUL-terminated; proprio: proprio_len raw state values (NULL / 0 for a
 * checkpoint without a proprio projector). */
FOCUSVLA_API focusvla_status focusvla_policy_act(focusvla_policy* policy, const focusvla_image* images,
                                                 size_t n_images, const char* instruction, const double* proprio,
                                                 size_t proprio_len, double* out, size_t out_capacity) FOCUSVLA_NOEXCEPT;
FOCUSVLA_API int64_t focusvla_policy_chunk_size(const focusvla_policy* policy) FOCUSVLA_NOEXCEPT;  /* -1 on a NULL handle */
FOCUSVLA_API int64_t focusvla_policy_action_dim(const focusvla_policy* policy) FOCUSVLA_NOEXCEPT;  /* -1 on a NULL handle */
/* The fixed camera count; 0: it follows each call (config.json without num_images_in_input and
 * options.num_images 0): any n_images >= 1. -1 on a NULL handle. */
FOCUSVLA_API int64_t focusvla_policy_num_images(const focusvla_policy* policy) FOCUSVLA_NOEXCEPT;
FOCUSVLA_API int64_t focusvla_policy_proprio_dim(const focusvla_policy* policy) FOCUSVLA_NOEXCEPT; /* 0: no proprio; -1: NULL */
/* Frees the handle (NULL is a no-op). Executors made from it keep the model alive. */
FOCUSVLA_API void focusvla_policy_free(focusvla_policy* policy) FOCUSVLA_NOEXCEPT;

/* ---- The chunk executor (focusvla/runtime/chunk_executor.h): at each control tick, the action to
 * execute now, with asynchronous inference or ACT's temporal ensembling. The caller's loop keeps
 * the rate and calls focusvla_executor_tick once per period, from one thread. */
typedef struct focusvla_executor focusvla_executor;

typedef struct focusvla_executor_options {
  uint32_t struct_size;      /* sizeof(focusvla_executor_options), or 0 (this header's size); as
                              * focusvla_policy_options: every zero field is the default */
  const char* mode;          /* NULL / "async" (default), "open-loop", "ensemble" */
  double hz;                 /* control rate; 0: the default, 20 */
  int32_t execute_steps;     /* open-loop: rows per chunk; 0 (default): all */
  int32_t threshold;         /* async: infer when at most this many actions remain; 0: the default, 4 */
  const char* aggregate;     /* async overlap: NULL / "replace" (default), "average" */
  double new_weight;         /* "average": weight of the newer chunk; 0: the default, 0.7 */
  double ensemble_m;         /* ensemble: weights exp(-m * i), i = 0 the oldest, m in [-10, 10];
                              * 0: the default, 0.01 (equal weights: ensemble_uniform) */
  int32_t ensemble_uniform;  /* 1: ensemble with equal weights (m = 0); ensemble_m must then be 0 */
} focusvla_executor_options;

typedef struct focusvla_executor_metrics {
  int64_t ticks, inferences, failed_inferences, deadline_misses, held_ticks, dropped_steps, merged_steps;
  double inference_p50_ms, inference_p99_ms, inference_max_ms;
  double jitter_p50_ms, jitter_p99_ms, jitter_max_ms;
  double staleness_mean_ms, staleness_max_ms; /* age of executed actions since their observation */
} focusvla_executor_metrics;

FOCUSVLA_API void focusvla_executor_options_init(focusvla_executor_options* options) FOCUSVLA_NOEXCEPT;
/* An executor over `policy` (which may be freed afterwards: the executor keeps the model).
 * options may be NULL (defaults). */
FOCUSVLA_API focusvla_status focusvla_executor_create(focusvla_policy* policy, const focusvla_executor_options* options,
                                                      focusvla_executor** out) FOCUSVLA_NOEXCEPT;
/* This tick's observation (as focusvla_policy_act) -> the action to execute now, into
 * action[0 .. action_dim). A failed background inference is reported here, at the next tick
 * (FOCUSVLA_ERROR_BAD_INPUT or _INTERNAL with its message), and nothing else happens in that
 * tick. */
FOCUSVLA_API focusvla_status focusvla_executor_tick(focusvla_executor* executor, const focusvla_image* images,
                                                    size_t n_images, const char* instruction, const double* proprio,
                                                    size_t proprio_len, double* action, size_t action_capacity) FOCUSVLA_NOEXCEPT;
FOCUSVLA_API focusvla_status focusvla_executor_metrics_get(const focusvla_executor* executor,
                                                           focusvla_executor_metrics* out) FOCUSVLA_NOEXCEPT;
/* Waits for an inference in flight, then frees (NULL is a no-op). */
FOCUSVLA_API void focusvla_executor_free(focusvla_executor* executor) FOCUSVLA_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* FOCUSVLA_FOCUSVLA_H_ */
