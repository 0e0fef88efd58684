#pragma once
// The JPEG round trip of the LIBERO / RLDS resize (SPEC 3.1): VLA-Adapter's
// `resize_image_for_policy` encodes a camera image with `tf.image.encode_jpeg(img)` and decodes it
// with `tf.io.decode_image(..., dtype=tf.uint8)` before its Lanczos-3 resize, as its RLDS dataset
// builder did with the training frames. Reproduced here through libjpeg with TensorFlow's settings
// (tensorflow/core/lib/jpeg/jpeg_mem.cc, kernels/image/encode_jpeg_op.cc, decode_image_op.cc):
//
//   encode: jpeg_set_defaults, quality 95 with baseline tables, 4:2:0 chroma subsampling (libjpeg's
//           default, TF's chroma_downsampling=True), Huffman tables not optimized, not progressive,
//           the accurate integer DCT (libjpeg's default), a JFIF header of 300 x 300 dots per inch;
//   decode: RGB output, fancy (triangle-filter) chroma upsampling, scale 1/1 and the *fast* integer
//           IDCT (JDCT_IFAST: DecodeImage always uses TF's default for JPEG, "sacrificing image
//           quality for speed").
//
// With libjpeg-turbo (TensorFlow bundles it; Debian's libjpeg62-turbo) the bytes and pixels equal
// TensorFlow's. libjpeg errors become focusvla::Error (libjpeg's own handler would exit()).

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "focusvla/vision/preprocess.h"

namespace focusvla::vision {

// `tf.image.encode_jpeg(image)` with its default arguments: the JPEG file of a uint8 RGB image.
std::string jpeg_encode_tf(const ImageView& image);

// `tf.io.decode_image(bytes, dtype=tf.uint8)` of a JPEG file: a uint8 (H, W, 3) host tensor.
// Grayscale files come back with one channel (H, W, 1), as in TF; CMYK files are refused.
torch::Tensor jpeg_decode_tf(const std::string& bytes);

// decode(encode(image)) per image: uint8 (H, W, 3) or (N, H, W, 3) on any device; the result has
// the same shape and device (the codec runs on the host).
torch::Tensor jpeg_roundtrip(const torch::Tensor& images);

// The libjpeg the library was built with, e.g. "libjpeg-turbo 2.1.5 (libjpeg API 62)".
std::string jpeg_library_version();

}  // namespace focusvla::vision
