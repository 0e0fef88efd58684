// The LIBERO resize's JPEG round trip against TensorFlow itself (gen_vision.py runs tensorflow-cpu):
// tf.image.encode_jpeg's bytes, tf.io.decode_image's pixels, and the reference's
// resize_image_for_policy (JPEG round trip + Lanczos-3) on LIBERO-like 256x256 frames and other
// sizes, all compared for equality; and libjpeg's errors as focusvla::Error.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <string>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/vision/jpeg.h"
#include "focusvla/vision/preprocess.h"
#include "focusvla/vision/resample.h"
#include "test_util.h"

namespace focusvla::vision {
namespace {

using focusvla::testing::asset_path;
using focusvla::testing::data_path;
using focusvla::testing::expect_error;

struct Data {
  io::StateDict tensors;
  nlohmann::json cases;
};

const Data& data() {
  static const Data d{io::StateDict::from_safetensors(data_path("vision", "preprocess.safetensors")),
                      io::read_json_file(data_path("vision", "preprocess.json"))};
  return d;
}

const torch::Tensor& tensor(const nlohmann::json& name) { return data().tensors.at(name.get<std::string>()); }

const nlohmann::json& jpeg_cases() {
  const nlohmann::json& cases = data().cases["jpeg"];
  EXPECT_GE(cases.size(), 8u) << "gen_vision.py wrote no JPEG cases";
  return cases;
}

std::string bytes_of(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return std::string(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
}

ImageView view_of(const torch::Tensor& image) {
  return ImageView{image.data_ptr<uint8_t>(), image.size(0), image.size(1), 3, 0};
}

// Largest per-value difference of two uint8 images, and how many values differ.
std::pair<int, int64_t> uint8_difference(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const auto d = (a.cpu().to(torch::kInt32) - b.cpu().to(torch::kInt32)).abs();
  return {d.max().item<int>(), d.gt(0).sum().item<int64_t>()};
}

std::string name_of(const nlohmann::json& c) { return c["name"].get<std::string>(); }

TEST(JpegTf, EncodeEqualsTensorflowByteForByte) {
  std::cout << "[ measured ] " << jpeg_library_version() << "\n";
  for (const auto& c : jpeg_cases()) {
    const auto input = tensor(c["input"]).contiguous();
    const std::string ours = jpeg_encode_tf(view_of(input)), tf = bytes_of(tensor(c["encoded"]));
    EXPECT_EQ(ours.size(), tf.size()) << name_of(c);
    EXPECT_TRUE(ours == tf) << name_of(c) << ": the JPEG files differ";
  }
}

TEST(JpegTf, DecodeEqualsTensorflow) {
  for (const auto& c : jpeg_cases()) {
    const auto out = jpeg_decode_tf(bytes_of(tensor(c["encoded"])));
    EXPECT_TRUE(torch::equal(out, tensor(c["decoded"]))) << name_of(c);
  }
}

TEST(JpegTf, RoundTripEqualsTensorflowOnEveryDeviceAndInBatches) {
  std::vector<torch::Device> devices{torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA);
  std::vector<torch::Tensor> inputs_256, expected_256;
  for (const auto& c : jpeg_cases()) {
    const auto& input = tensor(c["input"]);
    for (const auto& device : devices) {
      const auto out = jpeg_roundtrip(input.to(device));
      EXPECT_EQ(out.device(), device);
      EXPECT_TRUE(torch::equal(out.cpu(), tensor(c["decoded"]))) << name_of(c) << " on " << device;
    }
    if (input.size(0) == 256 && input.size(1) == 256) {
      inputs_256.push_back(input);
      expected_256.push_back(tensor(c["decoded"]));
    }
  }
  ASSERT_GE(inputs_256.size(), 2u);
  EXPECT_TRUE(torch::equal(jpeg_roundtrip(torch::stack(inputs_256)), torch::stack(expected_256)));
}

// The reference's resize_image_for_policy (TF: encode, decode, Lanczos-3, round) and the resize
// alone (jpeg_roundtrip off), pixel for pixel; and what the JPEG step changes.
TEST(JpegTf, ResizeForPolicyEqualsTensorflow) {
  for (const auto& c : jpeg_cases()) {
    const auto& input = tensor(c["input"]);
    const auto with_jpeg = tf_resize_lanczos3(jpeg_roundtrip(input), 224, 224);
    const auto without = tf_resize_lanczos3(input, 224, 224);
    const auto [jpeg_diff, jpeg_count] = uint8_difference(with_jpeg, tensor(c["policy_resize"]));
    const auto [plain_diff, plain_count] = uint8_difference(without, tensor(c["resize_only"]));
    EXPECT_EQ(jpeg_diff, 0) << name_of(c) << ": " << jpeg_count << " values differ from TF";
    EXPECT_EQ(plain_diff, 0) << name_of(c) << ": " << plain_count << " values differ from TF";
    const auto [effect, changed] = uint8_difference(with_jpeg, without);
    EXPECT_EQ(effect, c["max_diff_jpeg"].get<int>()) << name_of(c);
    std::printf("[ measured ] %-22s %4lldx%-4lld equal to TF; the JPEG step changes %5.1f%% of the resized values, "
                "by up to %d/255 (mean %.2f)\n",
                name_of(c).c_str(), static_cast<long long>(input.size(0)), static_cast<long long>(input.size(1)),
                100.0 * static_cast<double>(changed) / static_cast<double>(with_jpeg.numel()), effect,
                (with_jpeg.to(torch::kFloat64) - without.to(torch::kFloat64)).abs().mean().item<double>());
  }
}

io::PreprocessorConfig reference_config() {
  return io::PreprocessorConfig::load(asset_path("vla-adapter-reference/preprocessor_config.json"));
}

// As the reference's prepare_images_for_vla: the round trip applies to images that are resized,
// i.e. not already 224x224, only with the LIBERO steps, and not with jpeg_roundtrip off.
TEST(JpegPipeline, OnlyNon224ImagesWithTheLiberoResize) {
  PreprocessOptions on;
  on.libero_resize = on.center_crop = true;
  PreprocessOptions off = on;
  off.jpeg_roundtrip = false;
  const ImagePreprocessor with_jpeg(reference_config(), on), without(reference_config(), off);
  EXPECT_TRUE(PreprocessOptions{}.jpeg_roundtrip);  // the default, effective with libero_resize
  for (const auto& c : jpeg_cases()) {
    const auto& input = tensor(c["input"]);
    const bool model_size = input.size(0) == 224 && input.size(1) == 224;
    // The LIBERO steps then the encoder's Pillow resize (the identity at 224).
    const auto a = with_jpeg.encoder_input(input, 0)[0], b = without.encoder_input(input, 0)[0];
    if (model_size) {
      EXPECT_TRUE(torch::equal(a, tf_center_crop(input))) << name_of(c);
      EXPECT_TRUE(torch::equal(b, tf_center_crop(input))) << name_of(c);
    } else {
      EXPECT_TRUE(torch::equal(a, tf_center_crop(tensor(c["policy_resize"])))) << name_of(c);
      EXPECT_TRUE(torch::equal(b, tf_center_crop(tensor(c["resize_only"])))) << name_of(c);
    }
    // Without the LIBERO steps nothing changes either way.
    PreprocessOptions plain;
    plain.jpeg_roundtrip = true;
    EXPECT_TRUE(torch::equal(ImagePreprocessor(reference_config(), plain).encoder_input(input, 0)[0],
                             pil_resize(input, 224, 224)))
        << name_of(c);
  }
}

// What the round trip costs per LIBERO camera frame (256x256), measured here (the benchmark
// bench_vision's BM_JpegRoundTrip is the careful number).
TEST(JpegPipeline, RoundTripCostPer256Frame) {
  const auto& input = tensor(jpeg_cases()[0]["input"]);
  ASSERT_EQ(input.size(0), 256);
  (void)jpeg_roundtrip(input);
  const int n = 20;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) (void)jpeg_roundtrip(input);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / n;
  std::printf("[ measured ] JPEG round trip of a 256x256 frame: %.3f ms\n", ms);
}

TEST(JpegErrors, CorruptOrTruncatedDataIsAnError) {
  const std::string good = bytes_of(tensor(jpeg_cases()[0]["encoded"]));
  expect_error([] { jpeg_decode_tf(""); }, {"jpeg_decode_tf", "no data"});
  expect_error([] { jpeg_decode_tf("not a jpeg file at all"); }, {"jpeg_decode_tf", "libjpeg", "Not a JPEG file"});
  // Cut in the entropy-coded data: TF fails ("Premature end of JPEG data"); so do we.
  expect_error([&] { jpeg_decode_tf(good.substr(0, good.size() / 2)); },
               {"jpeg_decode_tf", "libjpeg", "Premature end of JPEG file"});
  // Cut in the headers.
  expect_error([&] { jpeg_decode_tf(good.substr(0, 40)); }, {"jpeg_decode_tf", "libjpeg"});
  // A broken frame header (0 lines).
  std::string zero_height = good;
  const size_t sof = zero_height.find("\xff\xc0", 0, 2);
  ASSERT_NE(sof, std::string::npos);
  zero_height[sof + 5] = zero_height[sof + 6] = '\0';
  expect_error([&] { jpeg_decode_tf(zero_height); }, {"jpeg_decode_tf", "libjpeg"});
  // The library still works after errors (no state left behind).
  EXPECT_TRUE(torch::equal(jpeg_decode_tf(good), tensor(jpeg_cases()[0]["decoded"])));
}

TEST(JpegErrors, BadImages) {
  expect_error([] { jpeg_roundtrip(torch::zeros({8, 8, 4}, torch::kUInt8)); }, {"jpeg_roundtrip", "expected 3 channels"});
  expect_error([] { jpeg_roundtrip(torch::zeros({0, 8, 3}, torch::kUInt8)); }, {"jpeg_roundtrip", "empty image"});
  expect_error([] { jpeg_roundtrip(torch::zeros({8, 8, 3}, torch::kFloat32)); }, {"jpeg_roundtrip", "uint8"});
  expect_error([] { jpeg_roundtrip(torch::zeros({1, 70000, 3}, torch::kUInt8)); },
               {"jpeg_roundtrip", "too large for JPEG", "1x70000"});
  expect_error([] { jpeg_encode_tf(ImageView{nullptr, 4, 4, 3, 0}); }, {"jpeg_encode_tf", "null"});
  std::vector<uint8_t> pixels(4 * 4 * 3, 9);
  expect_error([&] { jpeg_encode_tf(ImageView{pixels.data(), 4, 4, 3, 5}); }, {"jpeg_encode_tf", "row_stride 5"});
  // Padded rows are read through the stride.
  std::vector<uint8_t> padded(4 * 20, 200);
  for (int y = 0; y < 4; ++y) std::memcpy(padded.data() + y * 20, pixels.data() + y * 12, 12);
  EXPECT_EQ(jpeg_encode_tf(ImageView{padded.data(), 4, 4, 3, 20}), jpeg_encode_tf(ImageView{pixels.data(), 4, 4, 3, 0}));
}

}  // namespace
}  // namespace focusvla::vision
