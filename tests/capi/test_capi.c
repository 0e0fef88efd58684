/* The C ABI from C (compiled by a C compiler, run under AddressSanitizer with leak detection):
 * loads a checkpoint, acts on one observation given as raw RGB files, writes the actions for
 * tests/python/check_capi.py to compare with the reference and with the C++ API (`focusvla act`),
 * and checks the ABI's contract on the way: the same actions from padded rows, every misuse a
 * status with a message, outputs untouched on failure, handles freed.
 *
 *   test_capi CHECKPOINT UNNORM_KEY INSTRUCTION PROPRIO_CSV OUT_FILE H W IMAGE.rgb [IMAGE.rgb ...]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "focusvla/focusvla.h"

static int failures = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      ++failures;                                          \
    }                                                      \
  } while (0)

/* The last error contains `fragment`. */
static void expect_error(focusvla_status got, focusvla_status want, const char* fragment) {
  CHECK(got == want, "status %d, expected %d (%s)", (int)got, (int)want, focusvla_last_error());
  CHECK(strstr(focusvla_last_error(), fragment) != NULL, "error '%s' does not name '%s'", focusvla_last_error(),
        fragment);
}

static unsigned char* read_file(const char* path, size_t expected) {
  FILE* f = fopen(path, "rb");
  unsigned char* data;
  if (f == NULL) {
    fprintf(stderr, "cannot open %s\n", path);
    exit(2);
  }
  data = (unsigned char*)malloc(expected);
  if (data == NULL || fread(data, 1, expected, f) != expected) {
    fprintf(stderr, "%s: expected %zu bytes\n", path, expected);
    exit(2);
  }
  fclose(f);
  return data;
}

static size_t parse_csv(const char* text, double* out, size_t capacity) {
  size_t n = 0;
  const char* p = text;
  while (*p != '\0' && n < capacity) {
    char* end = NULL;
    out[n++] = strtod(p, &end);
    p = (*end == ',') ? end + 1 : end;
    if (*end == '\0') break;
  }
  return n;
}

int main(int argc, char** argv) {
  const char *checkpoint, *unnorm_key, *instruction, *out_path;
  double proprio[64], actions[8 * 7], again[8 * 7], canary[8 * 7];
  size_t proprio_len, n_images, i, needed;
  int height, width;
  focusvla_image images[8], padded[8];
  unsigned char* pixels[8];
  unsigned char* padded_pixels[8];
  focusvla_policy_options options;
  focusvla_policy* policy = NULL;
  focusvla_status status;
  FILE* out;

  if (argc < 9 || argc - 8 > 8) {
    fprintf(stderr, "usage: test_capi CHECKPOINT UNNORM_KEY INSTRUCTION PROPRIO_CSV OUT_FILE H W IMAGE.rgb...\n");
    return 2;
  }
  checkpoint = argv[1];
  unnorm_key = argv[2];
  instruction = argv[3];
  proprio_len = parse_csv(argv[4], proprio, 64);
  out_path = argv[5];
  height = atoi(argv[6]);
  width = atoi(argv[7]);
  n_images = (size_t)(argc - 8);
  for (i = 0; i < n_images; ++i) {
    size_t row, row_bytes = (size_t)width * 3, stride = row_bytes + 13; /* 13 bytes of padding per row */
    pixels[i] = read_file(argv[8 + i], (size_t)height * row_bytes);
    images[i].data = pixels[i];
    images[i].height = height;
    images[i].width = width;
    images[i].row_stride = (int64_t)row_bytes;
    padded_pixels[i] = (unsigned char*)calloc((size_t)height, stride);
    for (row = 0; row < (size_t)height; ++row) memcpy(padded_pixels[i] + row * stride, pixels[i] + row * row_bytes, row_bytes);
    padded[i] = images[i];
    padded[i].data = padded_pixels[i];
    padded[i].row_stride = (int64_t)stride;
  }

  CHECK(strlen(focusvla_version()) > 0, "empty version");
  CHECK(strcmp(focusvla_last_error(), "") == 0, "last error set before any failure: %s", focusvla_last_error());

  /* Loading: misuse and bad input first, then the real thing. */
  expect_error(focusvla_policy_load(checkpoint, NULL, NULL), FOCUSVLA_ERROR_INVALID_ARGUMENT, "out is NULL");
  policy = (focusvla_policy*)&options; /* garbage that must be overwritten with NULL */
  expect_error(focusvla_policy_load("/nonexistent/checkpoint", NULL, &policy), FOCUSVLA_ERROR_BAD_INPUT,
               "/nonexistent/checkpoint");
  CHECK(policy == NULL, "a failed load left a handle");
  focusvla_policy_options_init(&options);
  CHECK(options.center_crop == 1 && options.device == NULL && options.num_images == 0, "options defaults");
  options.unnorm_key = "no_such_dataset";
  expect_error(focusvla_policy_load(checkpoint, &options, &policy), FOCUSVLA_ERROR_BAD_INPUT, "no_such_dataset");
  options.unnorm_key = unnorm_key;
  options.dtype = "float8";
  expect_error(focusvla_policy_load(checkpoint, &options, &policy), FOCUSVLA_ERROR_BAD_INPUT, "options.dtype");
  options.dtype = NULL;
  status = focusvla_policy_load(checkpoint, &options, &policy);
  CHECK(status == FOCUSVLA_OK && policy != NULL, "load failed: %s", focusvla_last_error());
  if (policy == NULL) return 1;

  CHECK(focusvla_policy_chunk_size(policy) == 8, "chunk_size %lld", (long long)focusvla_policy_chunk_size(policy));
  CHECK(focusvla_policy_action_dim(policy) == 7, "action_dim %lld", (long long)focusvla_policy_action_dim(policy));
  CHECK(focusvla_policy_num_images(policy) == (int64_t)n_images, "num_images");
  CHECK(focusvla_policy_proprio_dim(policy) == (int64_t)proprio_len, "proprio_dim");
  CHECK(focusvla_policy_chunk_size(NULL) == -1 && focusvla_policy_action_dim(NULL) == -1, "NULL handle sizes");
  needed = (size_t)(focusvla_policy_chunk_size(policy) * focusvla_policy_action_dim(policy));

  /* The observation. */
  status = focusvla_policy_act(policy, images, n_images, instruction, proprio, proprio_len, actions, 8 * 7);
  CHECK(status == FOCUSVLA_OK, "act failed: %s", focusvla_last_error());
  for (i = 0; i < needed; ++i) CHECK(isfinite(actions[i]), "action %zu is not finite", i);
  /* The same pixels with padded rows: the same actions, bit for bit. */
  status = focusvla_policy_act(policy, padded, n_images, instruction, proprio, proprio_len, again, 8 * 7);
  CHECK(status == FOCUSVLA_OK, "act (padded rows) failed: %s", focusvla_last_error());
  CHECK(memcmp(actions, again, sizeof(double) * needed) == 0, "padded rows gave other actions");

  /* Misuse: each a status and a message; the output is left as it was (NaN canary). */
  for (i = 0; i < 8 * 7; ++i) canary[i] = NAN;
  expect_error(focusvla_policy_act(NULL, images, n_images, instruction, proprio, proprio_len, canary, 56),
               FOCUSVLA_ERROR_INVALID_ARGUMENT, "policy is NULL");
  expect_error(focusvla_policy_act(policy, images, n_images, instruction, proprio, proprio_len, canary, needed - 1),
               FOCUSVLA_ERROR_BUFFER_TOO_SMALL, "out_capacity");
  expect_error(focusvla_policy_act(policy, images, n_images - 1, instruction, proprio, proprio_len, canary, 56),
               FOCUSVLA_ERROR_BAD_INPUT, "camera");
  expect_error(focusvla_policy_act(policy, images, n_images, NULL, proprio, proprio_len, canary, 56),
               FOCUSVLA_ERROR_INVALID_ARGUMENT, "instruction is NULL");
  expect_error(focusvla_policy_act(policy, images, n_images, "", proprio, proprio_len, canary, 56),
               FOCUSVLA_ERROR_BAD_INPUT, "instruction");
  expect_error(focusvla_policy_act(policy, images, n_images, instruction, proprio, proprio_len - 1, canary, 56),
               FOCUSVLA_ERROR_BAD_INPUT, "proprio");
  expect_error(focusvla_policy_act(policy, images, n_images, instruction, NULL, 3, canary, 56),
               FOCUSVLA_ERROR_INVALID_ARGUMENT, "proprio is NULL");
  proprio[0] = NAN;
  expect_error(focusvla_policy_act(policy, images, n_images, instruction, proprio, proprio_len, canary, 56),
               FOCUSVLA_ERROR_BAD_INPUT, "proprio");
  proprio[0] = 0.0;
  padded[0].row_stride = 3 * width - 1;
  expect_error(focusvla_policy_act(policy, padded, n_images, instruction, proprio, proprio_len, canary, 56),
               FOCUSVLA_ERROR_BAD_INPUT, "row_stride");
  padded[0].data = NULL;
  expect_error(focusvla_policy_act(policy, padded, n_images, instruction, proprio, proprio_len, canary, 56),
               FOCUSVLA_ERROR_BAD_INPUT, "images[0]");
  for (i = 0; i < 8 * 7; ++i) CHECK(isnan(canary[i]), "a failed act wrote out[%zu]", i);

  out = fopen(out_path, "w");
  CHECK(out != NULL, "cannot write %s", out_path);
  if (out != NULL) {
    for (i = 0; i < needed; ++i) fprintf(out, "%.17g\n", actions[i]);
    fclose(out);
  }
  focusvla_policy_free(policy);
  focusvla_policy_free(NULL);
  for (i = 0; i < n_images; ++i) {
    free(pixels[i]);
    free(padded_pixels[i]);
  }
  if (failures == 0) printf("test_capi: all checks passed (%zu actions written to %s)\n", needed, out_path);
  return failures == 0 ? 0 : 1;
}
