// The openpi wire format against openpi's own packer: request frames written by
// openpi_client.msgpack_numpy (gen_serve.py, PyPI's openpi-client) decode to exactly the images,
// state and prompt they were packed from, malformed ones to an error naming the key and the
// problem; replies and metadata encode to the very bytes openpi's packb writes for them.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "focusvla/io/json_file.h"
#include "focusvla/serve/msgpack_numpy.h"
#include "test_util.h"

namespace focusvla::serve {
namespace {

// Where two byte strings first differ, with the bytes around it in hex (for a failure message).
std::string first_difference(const std::string& a, const std::string& b) {
  size_t at = 0;
  while (at < a.size() && at < b.size() && a[at] == b[at]) ++at;
  auto hex = [at](const std::string& s) {
    std::string out;
    const char* digits = "0123456789abcdef";
    for (size_t i = at >= 8 ? at - 8 : 0; i < std::min(s.size(), at + 24); ++i) {
      out += digits[(static_cast<unsigned char>(s[i]) >> 4) & 15];
      out += digits[static_cast<unsigned char>(s[i]) & 15];
    }
    return out;
  };
  return "first difference at byte " + std::to_string(at) + "\n  ours:   " + hex(a) + "\n  theirs: " + hex(b);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

RequestSpec libero_spec() {
  RequestSpec spec;
  spec.keys = default_observation_keys(2);
  spec.proprio_dim = 8;
  return spec;
}

Observation decode_file(const std::string& name, const RequestSpec& spec) {
  const std::string frame = read_bytes(testing::data_path("serve", "requests/" + name + ".msgpack"));
  return decode_observation(frame.data(), frame.size(), spec);
}

TEST(MsgpackNumpy, OpenpiRequestsDecodeExactly) {
  const auto cases = io::read_json_file(testing::data_path("serve", "cases.json"));
  int checked = 0;
  for (const auto& c : cases) {
    if (!c["valid"].get<bool>()) continue;
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    // NaN first: every field below must be overwritten by the decoder.
    Observation obs;
    obs.proprio.assign(8, std::nan(""));
    ASSERT_NO_THROW(obs = decode_file(name, libero_spec()));
    ASSERT_EQ(obs.images.size(), c["image_shapes"].size());
    for (size_t i = 0; i < obs.images.size(); ++i) {
      const auto shape = c["image_shapes"][i].get<std::vector<int64_t>>();
      EXPECT_EQ(obs.images[i].sizes().vec(), shape);
      EXPECT_EQ(obs.images[i].scalar_type(), torch::kUInt8);
      EXPECT_TRUE(obs.images[i].is_contiguous());
      const std::string want =
          read_bytes(testing::data_path("serve", "requests/" + name + ".image" + std::to_string(i) + ".bin"));
      ASSERT_EQ(static_cast<size_t>(obs.images[i].numel()), want.size());
      EXPECT_EQ(std::memcmp(obs.images[i].data_ptr(), want.data(), want.size()), 0) << "image " << i;
    }
    EXPECT_EQ(obs.proprio, c["state"].get<std::vector<double>>());  // exact: float32 widened, float64 as is
    EXPECT_EQ(obs.instruction, c["prompt"].get<std::string>());
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

TEST(MsgpackNumpy, MalformedRequestsNameKeyAndProblem) {
  const auto cases = io::read_json_file(testing::data_path("serve", "cases.json"));
  int checked = 0;
  for (const auto& c : cases) {
    if (c["valid"].get<bool>()) continue;
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    try {
      decode_file(name, libero_spec());
      ADD_FAILURE() << name << ": decoded without an error";
    } catch (const RequestError& e) {
      for (const auto& fragment : c["fragments"])
        EXPECT_NE(std::string(e.what()).find(fragment.get<std::string>()), std::string::npos)
            << "message: " << e.what() << "\nmissing: " << fragment.get<std::string>();
    }
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

TEST(MsgpackNumpy, KeysFollowTheSpec) {
  // One camera, no proprio projector: the wrist image and the state are not looked at.
  RequestSpec spec;
  spec.keys = default_observation_keys(1);
  spec.proprio_dim = 0;
  const Observation obs = decode_file("missing_state", spec);
  EXPECT_EQ(obs.images.size(), 1u);
  EXPECT_TRUE(obs.proprio.empty());
  EXPECT_EQ(default_observation_keys(2).images, (std::vector<std::string>{"observation/image", "observation/wrist_image"}));
  testing::expect_error([] { default_observation_keys(3); }, {"3 cameras", "--image-key"});
  // Other key names: the LIBERO frame has no "cam_high".
  spec.keys.images = {"cam_high"};
  testing::expect_error([&] { decode_file("libero_float64_state", spec); }, {"cam_high", "missing"});
  // A smaller side limit refuses the 480 x 640 image before copying it.
  RequestSpec small = libero_spec();
  small.max_image_side = 256;
  testing::expect_error([&] { decode_file("nested_maps_any_image_size", small); }, {"observation/image", "480 x 640"});
}

TEST(MsgpackNumpy, EveryTruncationOfAFrameIsAnError) {
  const std::string frame = read_bytes(testing::data_path("serve", "requests/libero_float64_state.msgpack"));
  // Every prefix (in strides, plus the last bytes) must fail cleanly, never read past its end.
  for (size_t n = 0; n < frame.size(); n += (n < 256 || n + 256 > frame.size()) ? 1 : 4093) {
    const std::vector<char> prefix(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(decode_observation(prefix.data(), prefix.size(), libero_spec()), RequestError) << n << " bytes";
  }
}

TEST(MsgpackNumpy, ReplyIsOpenpisBytes) {
  const auto replies = io::read_json_file(testing::data_path("serve", "replies.json"));
  const auto rows = replies["actions"].get<std::vector<std::vector<double>>>();
  ActionChunk::Matrix actions(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(rows[0].size()));
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t c = 0; c < rows[r].size(); ++c) actions(r, c) = rows[r][c];
  std::vector<std::pair<std::string, double>> timing;
  for (const auto& entry : replies["timing"])
    timing.emplace_back(entry[0].get<std::string>(), entry[1].is_null() ? std::nan("") : entry[1].get<double>());
  const std::string ours = encode_reply(actions, timing);
  const std::string theirs = read_bytes(testing::data_path("serve", "reply.msgpack"));
  EXPECT_EQ(ours.size(), theirs.size());
  EXPECT_TRUE(ours == theirs) << "encode_reply differs from openpi_client.msgpack_numpy.packb of the same reply: "
                              << first_difference(ours, theirs);
}

TEST(MsgpackNumpy, MetadataIsMsgpacksBytes) {
  const auto replies = io::read_json_file(testing::data_path("serve", "replies.json"));
  const std::string ours = encode_json(replies["metadata"]);
  const std::string theirs = read_bytes(testing::data_path("serve", "metadata.msgpack"));
  EXPECT_TRUE(ours == theirs) << "encode_json differs from msgpack.packb of the same map: "
                              << first_difference(ours, theirs);
}

}  // namespace
}  // namespace focusvla::serve
