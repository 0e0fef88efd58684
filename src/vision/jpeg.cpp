#include "focusvla/vision/jpeg.h"

// jpeglib.h needs size_t and FILE declared first.
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <jpeglib.h>
#include <jerror.h>

#include <memory>

#include "focusvla/core/error.h"
#include "resample_host.h"

namespace focusvla::vision {
namespace {

// TensorFlow's CompressFlags defaults as tf.image.encode_jpeg passes them (encode_jpeg_op.cc,
// jpeg_mem.h).
constexpr int kQuality = 95;
constexpr int kDensityUnit = 1;  // dots per inch
constexpr int kDensity = 300;

// libjpeg reports fatal errors through error_exit, which by default prints and calls exit().
// Ours formats the message and longjmps back to the call that set `jump`; the caller throws.
struct ErrorManager {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (corrupt data that libjpeg can skip) are not printed: TF counts and ignores them. Except
// the end of the data before the image's end: libjpeg's memory source then pads with an EOI marker
// and decodes the rest gray; TF's source reports it instead (jpeg_handle.cc, without
// try_recover_truncated) and the decode fails. So does ours.
void on_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) on_error(cinfo);
}

void install(ErrorManager& err) {
  jpeg_std_error(&err.mgr);
  err.mgr.error_exit = on_error;
  err.mgr.emit_message = on_message;
  err.message[0] = '\0';
}

// The encoder's state. Only plain C data lives across setjmp / longjmp (no destructors are
// skipped): the output buffer is malloc'ed by jpeg_mem_dest and freed by the caller.
struct Encoder {
  jpeg_compress_struct cinfo;
  ErrorManager err;
  unsigned char* out = nullptr;
  unsigned long size = 0;
};

// Returns false with err.message set when libjpeg failed.
bool encode(Encoder& e, const ImageView& image) {
  e.cinfo.err = &e.err.mgr;
  install(e.err);
  if (setjmp(e.err.jump)) {
    jpeg_destroy_compress(&e.cinfo);
    return false;
  }
  jpeg_create_compress(&e.cinfo);
  jpeg_mem_dest(&e.cinfo, &e.out, &e.size);
  e.cinfo.image_width = static_cast<JDIMENSION>(image.width);
  e.cinfo.image_height = static_cast<JDIMENSION>(image.height);
  e.cinfo.input_components = 3;
  e.cinfo.in_color_space = JCS_RGB;
  // TF's order: defaults (4:2:0, ISLOW DCT, standard Huffman tables), density, then quality with
  // baseline-limited tables. Chroma subsampling stays libjpeg's default (chroma_downsampling=True).
  jpeg_set_defaults(&e.cinfo);
  e.cinfo.density_unit = kDensityUnit;
  e.cinfo.X_density = kDensity;
  e.cinfo.Y_density = kDensity;
  jpeg_set_quality(&e.cinfo, kQuality, TRUE);
  jpeg_start_compress(&e.cinfo, TRUE);
  const int64_t stride = image.row_stride == 0 ? 3 * image.width : image.row_stride;
  while (e.cinfo.next_scanline < e.cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPLE*>(image.data + static_cast<int64_t>(e.cinfo.next_scanline) * stride);
    jpeg_write_scanlines(&e.cinfo, &row, 1);
  }
  jpeg_finish_compress(&e.cinfo);
  jpeg_destroy_compress(&e.cinfo);
  return true;
}

struct Decoder {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  const char* problem = nullptr;  // a refusal of ours (not libjpeg's)
};

// Reads the header and sets TF's decode parameters; false with a message when refused.
bool start_decode(Decoder& d, const std::string& bytes) {
  jpeg_mem_src(&d.cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&d.cinfo, TRUE);
  if (d.cinfo.jpeg_color_space == JCS_CMYK || d.cinfo.jpeg_color_space == JCS_YCCK) {
    d.problem = "CMYK / YCCK JPEG files are not supported";
    return false;
  }
  // DecodeImage's flags (decode_image_op.cc): components = min(file's, 3), ratio 1, fancy
  // upscaling, and the fast integer IDCT, TF's default for every JPEG decode op.
  d.cinfo.out_color_space = d.cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  d.cinfo.scale_num = 1;
  d.cinfo.scale_denom = 1;
  d.cinfo.do_fancy_upsampling = TRUE;
  d.cinfo.dct_method = JDCT_IFAST;
  jpeg_calc_output_dimensions(&d.cinfo);
  return true;
}

// Decodes into the buffer `allocate(height, width, channels)` returns (nullptr: refused).
template <typename Allocate>
bool decode(Decoder& d, const std::string& bytes, Allocate&& allocate) {
  d.cinfo.err = &d.err.mgr;
  install(d.err);
  if (setjmp(d.err.jump)) {
    jpeg_destroy_decompress(&d.cinfo);
    return false;
  }
  jpeg_create_decompress(&d.cinfo);
  if (!start_decode(d, bytes)) {
    jpeg_destroy_decompress(&d.cinfo);
    return false;
  }
  jpeg_start_decompress(&d.cinfo);
  uint8_t* pixels = allocate(d.cinfo.output_height, d.cinfo.output_width, d.cinfo.output_components);
  if (pixels == nullptr) {
    d.problem = "the decoded image has an unexpected size";
    jpeg_destroy_decompress(&d.cinfo);
    return false;
  }
  const size_t stride = static_cast<size_t>(d.cinfo.output_width) * static_cast<size_t>(d.cinfo.output_components);
  while (d.cinfo.output_scanline < d.cinfo.output_height) {
    JSAMPROW row = pixels + static_cast<size_t>(d.cinfo.output_scanline) * stride;
    if (jpeg_read_scanlines(&d.cinfo, &row, 1) != 1) {
      d.problem = "truncated JPEG data";
      jpeg_destroy_decompress(&d.cinfo);
      return false;
    }
  }
  jpeg_finish_decompress(&d.cinfo);
  jpeg_destroy_decompress(&d.cinfo);
  return true;
}

void check_view(const ImageView& image, const std::string& what) {
  check(image.data != nullptr, what, "data pointer is null");
  check(image.channels == 3, what, "expected 3 channels (RGB, interleaved), got " + std::to_string(image.channels));
  check(image.height > 0 && image.width > 0, what,
        "empty image (" + std::to_string(image.height) + "x" + std::to_string(image.width) + ")");
  // JPEG's frame header holds 16-bit sizes; libjpeg refuses more than 65500.
  check(image.height <= JPEG_MAX_DIMENSION && image.width <= JPEG_MAX_DIMENSION, what,
        "too large for JPEG (" + std::to_string(image.height) + "x" + std::to_string(image.width) + ", at most " +
            std::to_string(JPEG_MAX_DIMENSION) + " per side)");
  check(image.row_stride == 0 || image.row_stride >= 3 * image.width, what,
        "row_stride " + std::to_string(image.row_stride) + " is shorter than a row (" +
            std::to_string(3 * image.width) + " bytes)");
}

// One contiguous host image (H, W, 3) -> its round trip, into `out` (H, W, 3).
void roundtrip_one(const torch::Tensor& image, const torch::Tensor& out) {
  const std::string bytes = jpeg_encode_tf(ImageView{image.data_ptr<uint8_t>(), image.size(0), image.size(1), 3, 0});
  Decoder d;
  const bool ok = decode(d, bytes, [&](JDIMENSION height, JDIMENSION width, int channels) {
    // Our own encoder wrote the file: it decodes to the same size, in RGB.
    const bool same = height == out.size(0) && width == out.size(1) && channels == 3;
    return same ? out.data_ptr<uint8_t>() : nullptr;
  });
  check(ok, "jpeg_roundtrip", std::string("decoding failed: ") + (d.problem ? d.problem : d.err.message));
}

}  // namespace

std::string jpeg_encode_tf(const ImageView& image) {
  const std::string what = "jpeg_encode_tf";
  check_view(image, what);
  Encoder e;
  const bool ok = encode(e, image);
  std::unique_ptr<unsigned char, decltype(&std::free)> owned(e.out, &std::free);
  check(ok, what, std::string("libjpeg: ") + e.err.message);
  return std::string(reinterpret_cast<const char*>(e.out), e.size);
}

torch::Tensor jpeg_decode_tf(const std::string& bytes) {
  const std::string what = "jpeg_decode_tf";
  check(!bytes.empty(), what, "no data (0 bytes)");
  torch::Tensor out;
  Decoder d;
  const bool ok = decode(d, bytes, [&](JDIMENSION height, JDIMENSION width, int channels) {
    out = torch::empty({static_cast<int64_t>(height), static_cast<int64_t>(width), channels}, torch::kUInt8);
    return out.data_ptr<uint8_t>();
  });
  check(ok, what, d.problem ? std::string(d.problem) : std::string("libjpeg: ") + d.err.message);
  return out;
}

torch::Tensor jpeg_roundtrip(const torch::Tensor& images) {
  check_images(images, "jpeg_roundtrip");
  const torch::Tensor batch = detail::host_batch(images);
  check(batch.size(1) <= JPEG_MAX_DIMENSION && batch.size(2) <= JPEG_MAX_DIMENSION, "jpeg_roundtrip",
        "image too large for JPEG (" + std::to_string(batch.size(1)) + "x" + std::to_string(batch.size(2)) +
            ", at most " + std::to_string(JPEG_MAX_DIMENSION) + " per side)");
  torch::Tensor out = torch::empty_like(batch);
  for (int64_t i = 0; i < batch.size(0); ++i) roundtrip_one(batch[i], out[i]);
  return detail::like_input(out, images);
}

std::string jpeg_library_version() {
#ifdef LIBJPEG_TURBO_VERSION
#define FOCUSVLA_STR2(x) #x
#define FOCUSVLA_STR(x) FOCUSVLA_STR2(x)
  return "libjpeg-turbo " FOCUSVLA_STR(LIBJPEG_TURBO_VERSION) " (libjpeg API " + std::to_string(JPEG_LIB_VERSION) + ")";
#else
  return "libjpeg (API " + std::to_string(JPEG_LIB_VERSION) + ")";
#endif
}

}  // namespace focusvla::vision
