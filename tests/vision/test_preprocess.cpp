// Image preprocessing against the reference packages: Pillow's resize (bicubic, bilinear, Lanczos)
// on real LIBERO images rescaled to other sizes and on random images of random sizes, a NumPy
// transcription of TensorFlow's crop_and_resize, TensorFlow's own Lanczos-3 resize, and the whole
// Prismatic processor (torchvision) with and without the LIBERO steps (TF's resize_image_for_policy
// with and without its JPEG round trip; test_jpeg.cpp checks that step alone).

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <limits>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/vision/preprocess.h"
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

// The devices to check: the CPU always, CUDA too when this build and machine have it.
std::vector<torch::Device> devices() {
  std::vector<torch::Device> out{torch::kCPU};
  if (torch::cuda::is_available()) out.emplace_back(torch::kCUDA);
  return out;
}

// Largest per-pixel difference of two uint8 images, and how many values differ.
std::pair<int, int64_t> uint8_difference(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.scalar_type(), torch::kUInt8);
  EXPECT_EQ(a.sizes(), b.sizes());
  const auto d = (a.cpu().to(torch::kInt32) - b.cpu().to(torch::kInt32)).abs();
  return {d.max().item<int>(), d.gt(0).sum().item<int64_t>()};
}

io::PreprocessorConfig reference_config() {
  return io::PreprocessorConfig::load(asset_path("vla-adapter-reference/preprocessor_config.json"));
}

TEST(PreprocessPil, BicubicTo224MatchesPillow) {
  for (const auto& device : devices()) {
    int worst = 0;
    int64_t differing = 0, total = 0;
    for (const auto& c : data().cases["bicubic"]) {
      const auto input = tensor(c["input"]).to(device);
      const auto out = pil_resize(input, 224, 224, PilFilter::bicubic);
      EXPECT_EQ(out.device(), device);
      const auto [max_diff, count] = uint8_difference(out, tensor(c["expected"]));
      EXPECT_LE(max_diff, 1) << c["input"] << " " << input.sizes();
      worst = std::max(worst, max_diff);
      differing += count;
      total += out.numel();
    }
    std::cout << "[ measured ] " << device << " Pillow bicubic -> 224: " << data().cases["bicubic"].size()
              << " images, max difference " << worst << "/255, " << differing << " of " << total << " values differ\n";
  }
}

TEST(PreprocessPil, OtherFiltersAndSizesMatchPillow) {
  int worst = 0;
  for (const auto& c : data().cases["resize"]) {
    const auto& expected = tensor(c["expected"]);
    const auto out = pil_resize(tensor(c["input"]), expected.size(0), expected.size(1),
                                parse_pil_filter(c["filter"].get<std::string>()));
    const auto [max_diff, count] = uint8_difference(out, expected);
    EXPECT_LE(max_diff, 1) << c["expected"];
    worst = std::max(worst, max_diff);
  }
  std::cout << "[ measured ] Pillow bilinear/bicubic/lanczos at other sizes: max difference " << worst << "/255\n";
}

// Pillow <= 12 always resamples horizontally first; Pillow 13 (the oracle here) goes vertical
// first when that removes many more rows than columns. Both orders are available.
TEST(PreprocessPil, PassOrderOfOlderPillow) {
  const auto noise = torch::randint(0, 256, {300, 200, 3}, torch::TensorOptions().dtype(torch::kUInt8));
  const auto v_first = pil_resize(noise, 224, 224, PilFilter::bicubic, PilPassOrder::pillow13);
  const auto h_first = pil_resize(noise, 224, 224, PilFilter::bicubic, PilPassOrder::horizontal_first);
  EXPECT_FALSE(torch::equal(v_first, h_first));
  EXPECT_LE(uint8_difference(v_first, h_first).first, 40);
  // Equal shrink on both axes (LIBERO's 256 -> 224): the same pass order in both versions.
  const auto square = torch::randint(0, 256, {256, 256, 3}, torch::TensorOptions().dtype(torch::kUInt8));
  EXPECT_TRUE(torch::equal(pil_resize(square, 224, 224, PilFilter::bicubic, PilPassOrder::pillow13),
                           pil_resize(square, 224, 224, PilFilter::bicubic, PilPassOrder::horizontal_first)));
}

TEST(PreprocessPil, IdentityAtTheSameSizeAndBatched) {
  const auto& image = tensor(data().cases["bicubic"][0]["input"]);  // a 224x224 LIBERO image
  EXPECT_TRUE(pil_resize(image, 224, 224).is_same(image));
  // A batch (N, H, W, 3) gives each image's own result.
  std::vector<torch::Tensor> same_size;
  for (const auto& c : data().cases["bicubic"])
    if (tensor(c["input"]).size(0) == 256 && tensor(c["input"]).size(1) == 256) same_size.push_back(tensor(c["input"]));
  ASSERT_EQ(same_size.size(), 2u);
  const auto batched = pil_resize(torch::stack(same_size), 224, 224);
  for (size_t i = 0; i < same_size.size(); ++i)
    EXPECT_TRUE(torch::equal(batched[static_cast<int64_t>(i)], pil_resize(same_size[i], 224, 224)));
}

TEST(PreprocessTf, CenterCropMatchesCropAndResizeFormula) {
  for (const auto& device : devices()) {
    int worst = 0;
    int64_t differing = 0;
    for (const auto& c : data().cases["crop"]) {
      const auto out = tf_center_crop(tensor(c["input"]).to(device), 0.9, 224, 224);
      const auto [max_diff, count] = uint8_difference(out, tensor(c["expected"]));
      EXPECT_LE(max_diff, 1) << c["input"];
      worst = std::max(worst, max_diff);
      differing += count;
    }
    std::cout << "[ measured ] " << device << " TF center crop: max difference " << worst << "/255, " << differing
              << " values differ\n";
  }
}

TEST(PreprocessTf, Lanczos3MatchesScaleAndTranslate) {
  int worst = 0;
  int64_t differing = 0;
  for (const auto& c : data().cases["lanczos"]) {
    const auto out = tf_resize_lanczos3(tensor(c["input"]), 224, 224);
    const auto [max_diff, count] = uint8_difference(out, tensor(c["expected"]));
    // Against TensorFlow's own resize: equal (sinf as TF's std::sin, the same float order).
    EXPECT_EQ(max_diff, 0) << c["input"];
    worst = std::max(worst, max_diff);
    differing += count;
  }
  std::cout << "[ measured ] TF lanczos3 resize: max difference " << worst << "/255, " << differing
            << " values differ\n";
}

std::vector<torch::Tensor> pipeline_inputs(const nlohmann::json& c) {
  std::vector<torch::Tensor> out;
  for (const auto& name : c["inputs"]) out.push_back(tensor(name));
  return out;
}

// The whole processor on mixed sizes (224, 224, 256): channels 0-2 DINOv2-normalized, 3-5 SigLIP.
TEST(PreprocessPipeline, MatchesPrismaticProcessor) {
  for (const auto& c : data().cases["pipeline"]) {
    PreprocessOptions options;
    options.libero_resize = options.center_crop = c["libero"].get<bool>();
    options.jpeg_roundtrip = c.value("jpeg", true);
    const ImagePreprocessor preprocess(reference_config(), options);
    for (const auto& device : devices()) {
      std::vector<torch::Tensor> inputs;
      for (const auto& t : pipeline_inputs(c)) inputs.push_back(t.to(device));
      const auto out = preprocess(inputs);
      EXPECT_EQ(out.device(), device);
      EXPECT_EQ(out.scalar_type(), torch::kFloat32);
      const auto& expected = tensor(c["expected"]);
      ASSERT_EQ(out.sizes(), expected.sizes());
      const double diff = (out.cpu() - expected).abs().max().item<double>();
      std::cout << "[ measured ] " << device << " processor"
                << (options.libero_resize ? (options.jpeg_roundtrip ? " + LIBERO steps" : " + LIBERO steps without JPEG") : "")
                << ": max difference " << diff << " (one uint8 step is about 0.017)\n";
      // Every uint8 step is exact (TF's own resize and JPEG round trip; the crop's transcription
      // too, measured 0 here): only the float normalization may round differently.
      EXPECT_LE(diff, 1e-6);
    }
  }
}

TEST(PreprocessPipeline, TensorRawBufferAndBatchAgree) {
  const ImagePreprocessor preprocess(reference_config());
  const auto cases = pipeline_inputs(data().cases["pipeline"][0]);
  const auto reference = preprocess(cases);
  // (H, W, 3) and (N, H, W, 3) tensors.
  EXPECT_TRUE(torch::equal(preprocess(cases[0]), reference.slice(0, 0, 1)));
  EXPECT_TRUE(torch::equal(preprocess(torch::stack({cases[0], cases[1]})), reference.slice(0, 0, 2)));
  // A raw buffer with padded rows (stride > width * 3).
  const auto& image = cases[2];  // 256x256
  const int64_t stride = image.size(1) * 3 + 13;
  std::vector<uint8_t> buffer(static_cast<size_t>(image.size(0) * stride), 77);
  for (int64_t y = 0; y < image.size(0); ++y)
    std::memcpy(buffer.data() + y * stride, image[y].contiguous().data_ptr<uint8_t>(), image.size(1) * 3);
  const ImageView view{buffer.data(), image.size(0), image.size(1), 3, stride};
  EXPECT_TRUE(torch::equal(preprocess(view), reference.slice(0, 2, 3)));
  const ImageView packed{cases[0].contiguous().data_ptr<uint8_t>(), 224, 224};
  EXPECT_TRUE(torch::equal(preprocess(std::vector<ImageView>{packed, view}),
                           torch::cat({reference.slice(0, 0, 1), reference.slice(0, 2, 3)})));
  // B samples of N cameras.
  const auto batch = preprocess.batch({{cases[0], cases[2]}, {cases[1], cases[0]}});
  ASSERT_EQ(batch.sizes(), (std::vector<int64_t>{2, 2, 6, 224, 224}));
  EXPECT_TRUE(torch::equal(batch[0][1], reference[2]));
  EXPECT_TRUE(torch::equal(batch[1][0], reference[1]));
}

#ifdef FOCUSVLA_WITH_OPENCV
TEST(PreprocessPipeline, OpenCvMatInputs) {
  const ImagePreprocessor preprocess(reference_config());
  const auto cases = pipeline_inputs(data().cases["pipeline"][0]);
  const auto reference = preprocess(cases);
  auto mat_of = [](const torch::Tensor& t) {
    const auto c = t.contiguous();
    return cv::Mat(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC3, c.data_ptr<uint8_t>()).clone();
  };
  const cv::Mat a = mat_of(cases[0]), c = mat_of(cases[2]);
  EXPECT_TRUE(torch::equal(preprocess(a), reference.slice(0, 0, 1)));
  EXPECT_TRUE(torch::equal(preprocess(std::vector<cv::Mat>{a, c}),
                           torch::cat({reference.slice(0, 0, 1), reference.slice(0, 2, 3)})));
  // A region of interest (rows not contiguous) is read through its step.
  cv::Mat big(300, 300, CV_8UC3, cv::Scalar(1, 2, 3));
  c.copyTo(big(cv::Rect(10, 20, 256, 256)));
  EXPECT_TRUE(torch::equal(preprocess(big(cv::Rect(10, 20, 256, 256))), reference.slice(0, 2, 3)));
  expect_error([&] { preprocess(cv::Mat(10, 10, CV_32FC3)); }, {"cv::Mat", "expected uint8 data"});
  expect_error([&] { preprocess(cv::Mat(10, 10, CV_8UC1)); }, {"cv::Mat", "expected 3 channels", "got 1"});
  expect_error([&] { preprocess(cv::Mat()); }, {"cv::Mat"});
}
#endif

// into() writes the whole caller buffer: nothing of the NaN poison survives.
TEST(PreprocessPipeline, IntoCallerBufferLeavesNoPoison) {
  for (const auto& c : data().cases["pipeline"]) {
    PreprocessOptions options;
    options.libero_resize = options.center_crop = c["libero"].get<bool>();
    options.jpeg_roundtrip = c.value("jpeg", true);
    const ImagePreprocessor preprocess(reference_config(), options);
    const auto inputs = pipeline_inputs(c);
    for (const bool uniform : {false, true}) {
      const auto images = uniform ? std::vector<torch::Tensor>{inputs[0], inputs[1]} : inputs;
      auto out = torch::full({static_cast<int64_t>(images.size()), 6, 224, 224},
                             std::numeric_limits<float>::quiet_NaN());
      preprocess.into(images, out);
      EXPECT_FALSE(out.isnan().any().item<bool>());
      EXPECT_TRUE(torch::equal(out, preprocess(images)));
      // A non-contiguous destination (a channels-last view) is filled too.
      auto strided = torch::full({static_cast<int64_t>(images.size()), 224, 224, 6},
                                 std::numeric_limits<float>::quiet_NaN())
                         .permute({0, 3, 1, 2});
      preprocess.into(images, strided);
      EXPECT_FALSE(strided.isnan().any().item<bool>());
      EXPECT_TRUE(torch::equal(strided, out));
    }
  }
}

// The two halves the policy runs (host stage into a uint8 buffer, normalization on the device)
// give operator()'s values bit for bit, on every device here, in float32 and cast to bf16.
TEST(PreprocessPipeline, StageThenNormalizeEqualsTheWholePipeline) {
  for (const auto& c : data().cases["pipeline"]) {
    PreprocessOptions options;
    options.libero_resize = options.center_crop = c["libero"].get<bool>();
    options.jpeg_roundtrip = c.value("jpeg", true);
    const ImagePreprocessor preprocess(reference_config(), options);
    const auto inputs = pipeline_inputs(c);
    const auto whole = preprocess(inputs);
    auto staged = torch::full({static_cast<int64_t>(inputs.size()), 2, 224, 224, 3}, 255, torch::kUInt8);
    staged[0][0][7][9][2] = 1;  // some poison a forgotten write would leave
    preprocess.stage(inputs, staged);
    for (const auto& device : devices()) {
      const auto out = preprocess.normalize(staged.to(device));
      EXPECT_EQ(out.device(), device);
      EXPECT_TRUE(torch::equal(out.cpu(), whole)) << device;
      EXPECT_TRUE(torch::equal(preprocess.normalize(staged.to(device), torch::kBFloat16).cpu(), whole.to(torch::kBFloat16)));
      // A batch dimension in front.
      EXPECT_TRUE(torch::equal(preprocess.normalize(staged.unsqueeze(0).to(device)).cpu(), whole.unsqueeze(0)));
    }
  }
  const ImagePreprocessor preprocess(reference_config());
  const auto inputs = pipeline_inputs(data().cases["pipeline"][0]);
  expect_error([&] { preprocess.stage(inputs, torch::empty({1, 2, 224, 224, 3}, torch::kUInt8)); },
               {"ImagePreprocessor::stage", "output buffer"});
  expect_error([&] { preprocess.normalize(torch::empty({1, 2, 224, 224, 4}, torch::kUInt8)); },
               {"ImagePreprocessor::normalize", "staged uint8"});
}

TEST(PreprocessErrors, WrongChannelCount) {
  const ImagePreprocessor preprocess(reference_config());
  expect_error([&] { preprocess(torch::zeros({32, 32, 4}, torch::kUInt8)); },
                          {"expected 3 channels", "got 4", "[32, 32, 4]"});
  expect_error([&] { preprocess(torch::zeros({2, 32, 32, 1}, torch::kUInt8)); },
                          {"expected 3 channels", "got 1"});
  expect_error([&] { pil_resize(torch::zeros({8, 8, 2}, torch::kUInt8), 4, 4); },
                          {"pil_resize", "expected 3 channels"});
  std::vector<uint8_t> buffer(64 * 4);
  expect_error([&] { preprocess(ImageView{buffer.data(), 8, 8, 4}); },
                          {"image buffer", "expected 3 channels", "got 4"});
}

TEST(PreprocessErrors, EmptyImage) {
  const ImagePreprocessor preprocess(reference_config());
  expect_error([&] { preprocess(torch::zeros({0, 10, 3}, torch::kUInt8)); }, {"empty image (0x10)"});
  expect_error([&] { preprocess(ImageView{nullptr, 0, 0}); }, {"image buffer", "empty image"});
  expect_error([&] { tf_center_crop(torch::zeros({5, 0, 3}, torch::kUInt8)); },
                          {"tf_center_crop", "empty image (5x0)"});
  expect_error([&] { preprocess(torch::Tensor()); }, {"undefined"});
}

TEST(PreprocessErrors, NonUint8Data) {
  const ImagePreprocessor preprocess(reference_config());
  expect_error([&] { preprocess(torch::zeros({16, 16, 3}, torch::kFloat32)); },
                          {"expected uint8 image data", "Float"});
  expect_error([&] { preprocess({torch::zeros({16, 16, 3}, torch::kUInt8), torch::zeros({16, 16, 3})}); },
                          {"image 1", "expected uint8 image data", "Float"});
  expect_error([&] { tf_resize_lanczos3(torch::zeros({16, 16, 3}, torch::kInt32), 8, 8); },
                          {"tf_resize_lanczos3", "Int"});
}

TEST(PreprocessErrors, ZeroCameras) {
  const ImagePreprocessor preprocess(reference_config());
  expect_error([&] { preprocess(std::vector<torch::Tensor>{}); }, {"zero cameras"});
  expect_error([&] { preprocess(std::vector<ImageView>{}); }, {"zero cameras"});
  expect_error([&] { preprocess(torch::zeros({0, 16, 16, 3}, torch::kUInt8)); }, {"no images (N = 0)"});
  expect_error([&] { preprocess.batch({}); }, {"no samples"});
  expect_error([&] { preprocess.batch({{}}); }, {"zero cameras"});
}

// Cameras of one call may differ in size (each is resized on its own), but every sample of a
// batch must have the same camera count, and a caller buffer must fit.
TEST(PreprocessErrors, MismatchedCamerasAndBuffers) {
  const ImagePreprocessor preprocess(reference_config());
  const auto a = torch::zeros({224, 224, 3}, torch::kUInt8), b = torch::zeros({100, 120, 3}, torch::kUInt8);
  EXPECT_EQ(preprocess({a, b}).sizes(), (std::vector<int64_t>{2, 6, 224, 224}));
  expect_error([&] { preprocess.batch({{a, b}, {a}}); },
                          {"sample 1 has 1 camera images, sample 0 has 2"});
  expect_error([&] { preprocess({a, torch::zeros({2, 224, 224, 3}, torch::kUInt8)}); },
                          {"image 1", "one image [H, W, 3] per camera"});
  auto wrong = torch::zeros({3, 6, 224, 224});
  expect_error([&] { preprocess.into({a, b}, wrong); }, {"output buffer", "[2, 6, 224, 224]"});
  auto half = torch::zeros({2, 6, 224, 224}, torch::kFloat16);
  expect_error([&] { preprocess.into({a, b}, half); }, {"output buffer must be float32", "Half"});
}

TEST(PreprocessErrors, UnsupportedConfig) {
  auto config = reference_config();
  config.image_resize_strategy = "letterbox";
  expect_error([&] { ImagePreprocessor p(config); }, {"letterbox"});
  config = reference_config();
  config.backbones[1].interpolation = "nearest";
  expect_error([&] { ImagePreprocessor p(config); }, {"interpolation 'nearest'"});
  config = reference_config();
  config.backbones.clear();
  expect_error([&] { ImagePreprocessor p(config); }, {"ImagePreprocessor", "no encoders"});
  config = reference_config();
  config.backbones[1].input_size = {3, 448, 448};
  expect_error([&] { ImagePreprocessor p(config); }, {"one input size", "224", "448"});
}

}  // namespace
}  // namespace focusvla::vision
