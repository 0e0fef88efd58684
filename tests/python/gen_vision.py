#!/usr/bin/env python3
"""Oracle for the vision module: timm encoders, the Prismatic projector, Pillow / torchvision
preprocessing, NumPy transcriptions of TensorFlow's LIBERO image steps and TensorFlow itself
(tensorflow-cpu) for the reference's resize_image_for_policy (JPEG round trip + Lanczos-3).

Usage: python gen_vision.py OUT_DIR          (reads $FOCUSVLA_ASSETS, default <repo>/assets)

Writes under OUT_DIR:
  tiny16/model.safetensors   random fp32 weights under the checkpoint names (vision_backbone.*,
                             projector.*) of timm encoders built with the DINOv2-L/14-reg4 and
                             SigLIP-SO400M/14 arguments at small widths, 16 heads (the table's
                             head count, so the C++ side builds them from config.json + shapes)
  tiny16/config.json         the reference config.json (timm_model_ids, image_sizes)
  tiny16/io.safetensors      pixels (B=2, N=2, 6, 224, 224) and, in fp32 and bf16, the encoder
                             outputs, block-0 tokens, fused features and projected embeddings
  tiny4/...                  the same at make_checkpoint.py's tiny sizes (4 heads), bf16 weights
  full/model.safetensors     full-size encoders + projector, random bf16 weights
  full/io.safetensors        one LIBERO image through Prismatic's processor, fused features and
                             embeddings of the full-size reference in fp32
  full/keys.json             {name: shape} of timm's full state dicts under the checkpoint names
  preprocess.safetensors     uint8 images and what Pillow / torchvision / the TF transcriptions
                             make of them (see write_preprocess)
  preprocess.json            the cases of preprocess.safetensors

The reference forward is Prismatic's: featurizer(x) = get_intermediate_layers(x, n={depth - 2})[0]
for each camera, concatenated on channels then on tokens, then the projector (fc1, GELU, fc2,
GELU, fc3). Everything is seeded.
"""
import ctypes
import ctypes.util
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TVF

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.environ.get("FOCUSVLA_ASSETS") or os.path.join(HERE, "..", "..", "assets")
SEED = 20251124

# Widths for the encoders; "full" is the released architecture (SPEC section 4).
SIZES = {
    "tiny16": dict(dino=dict(embed_dim=128, depth=4, num_heads=16), siglip=dict(embed_dim=144, depth=4, num_heads=16),
                   llm_dim=112, weight_dtype=torch.float32),
    "tiny4": dict(dino=dict(embed_dim=64, depth=3, num_heads=4), siglip=dict(embed_dim=72, depth=3, num_heads=4),
                  llm_dim=112, weight_dtype=torch.bfloat16),
    "full": dict(dino=dict(embed_dim=1024, depth=24, num_heads=16), siglip=dict(embed_dim=1152, depth=27, num_heads=16),
                 llm_dim=896, weight_dtype=torch.bfloat16),
}


# ---------------------------------------------------------------------------------------------
# Models


def encoders(size):
    """The two timm encoders with the arguments of vit_large_patch14_reg4_dinov2 and
    vit_so400m_patch14_siglip_224, as Prismatic creates them (img_size=224, num_classes=0)."""
    s = SIZES[size]
    with torch.device("meta"):
        dino = VisionTransformer(img_size=224, patch_size=14, num_classes=0, init_values=1e-5, reg_tokens=4,
                                 no_embed_class=True, mlp_ratio=4.0, **s["dino"])
        siglip = VisionTransformer(img_size=224, patch_size=14, num_classes=0, class_token=False, global_pool="map",
                                   mlp_ratio=3.7362, **s["siglip"])
    return dino.to_empty(device="cpu").eval(), siglip.to_empty(device="cpu").eval()


class Projector(torch.nn.Module):
    """Prismatic's FusedMLPProjector as the HF port names it (projector.fc1/fc2/fc3)."""

    def __init__(self, vision_dim, llm_dim):
        super().__init__()
        self.fc1 = torch.nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = torch.nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = torch.nn.Linear(llm_dim, llm_dim)
        self.act = torch.nn.GELU()

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


@torch.no_grad()
def randomize(module, gen):
    """Random values that keep activations in range through every block and make each part
    matter (timm's init has LayerScale 1e-5 and zero biases, which would hide bugs)."""
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            p.copy_(torch.rand(p.shape, generator=gen) * 0.4 + 0.1)
        elif "norm" in name and leaf == "weight":
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        elif leaf == "bias":
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        elif leaf in ("cls_token", "reg_token", "pos_embed", "latent"):
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        else:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def round_trip(module, dtype):
    """Rounds the parameters to `dtype` (the stored weights), keeping the module in fp32."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dtype).float())


def checkpoint_tensors(dino, siglip, projector, dtype):
    out = {}
    for prefix, module in (("vision_backbone.featurizer.", dino), ("vision_backbone.fused_featurizer.", siglip),
                           ("projector.", projector)):
        for name, t in module.state_dict().items():
            # Prismatic renames timm's LayerScale `gamma` (HF mangles names containing "gamma").
            out[prefix + name.replace(".gamma", ".scale_factor")] = t.detach().to(dtype).contiguous()
    return out


def featurize(vit, x):
    """Prismatic: featurizer.forward = partial(get_intermediate_layers, n={len(blocks) - 2})."""
    return vit.get_intermediate_layers(x, n={len(vit.blocks) - 2})[0]


@torch.inference_mode()
def reference(dino, siglip, projector, pixels):
    """pixels (B, N, 6, H, W) -> dict of the reference's outputs, as VLA-Adapter's
    PrismaticVisionBackbone loops over the cameras."""
    dtype = next(dino.parameters()).dtype
    pixels = pixels.to(dtype)
    per_camera, dino_out, siglip_out = [], [], []
    for n in range(pixels.shape[1]):
        img, img_fused = torch.split(pixels[:, n], [3, 3], dim=1)
        a, b = featurize(dino, img), featurize(siglip, img_fused)
        dino_out.append(a)
        siglip_out.append(b)
        per_camera.append(torch.cat([a, b], dim=2))
    features = torch.cat(per_camera, dim=1)
    # Block 0 of DINOv2 on the first sample's first camera, for the C++ tap.
    x = dino._pos_embed(dino.patch_embed(pixels[:1, 0, :3]))
    block0 = dino.blocks[0](x)
    return {
        "dino": torch.stack(dino_out, 1).flatten(0, 1).contiguous(),      # (B*N, 256, D1), sample-major
        "siglip": torch.stack(siglip_out, 1).flatten(0, 1).contiguous(),
        "dino_block0": block0.contiguous(),
        "features": features.contiguous(),
        "output": projector(features).contiguous(),
    }


def write_model_dir(out_dir, size, gen, pixels):
    os.makedirs(out_dir, exist_ok=True)
    s = SIZES[size]
    dino, siglip = encoders(size)
    projector = Projector(s["dino"]["embed_dim"] + s["siglip"]["embed_dim"], s["llm_dim"]).eval()
    for m in (dino, siglip, projector):
        randomize(m, gen)
        round_trip(m, s["weight_dtype"])
    save_file(checkpoint_tensors(dino, siglip, projector, s["weight_dtype"]), os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    shutil.copy(os.path.join(ASSETS, "vla-adapter-reference", "config.json"), out_dir)
    io = {"pixels": pixels.contiguous()}
    io.update({k: v.float() for k, v in reference(dino, siglip, projector, pixels).items()})
    if size != "full":  # bf16 reference: the same weights and inputs rounded to bf16, run in bf16
        for m in (dino, siglip, projector):
            m.to(torch.bfloat16)
        io.update({k + "_bf16": v.float() for k, v in reference(dino, siglip, projector, pixels).items()})
    else:
        keys = {}
        for prefix, module in (("vision_backbone.featurizer.", dino), ("vision_backbone.fused_featurizer.", siglip)):
            for name, t in module.state_dict().items():
                keys[prefix + name.replace(".gamma", ".scale_factor")] = list(t.shape)
        with open(os.path.join(out_dir, "keys.json"), "w") as f:
            json.dump(keys, f, indent=0)
    save_file(io, os.path.join(out_dir, "io.safetensors"))


# ---------------------------------------------------------------------------------------------
# Preprocessing references

F32 = np.float32


_LIBM = ctypes.CDLL(ctypes.util.find_library("m"))
_LIBM.sinf.restype, _LIBM.sinf.argtypes = ctypes.c_float, [ctypes.c_float]


def sinf(x):
    """C's sinf, as TF's std::sin(float) computes it. (NumPy's float32 np.sin is its own SIMD
    approximation: 1 ulp off in places, which moved 4 of 150528 pixels of a smooth 256x256 frame
    by one level after rounding, compared with TensorFlow.)"""
    return F32(_LIBM.sinf(F32(x)))


def tf_lanczos3(x):
    """sampling_kernels.h LanczosKernelFunc(3), float32."""
    k_pi = F32(3.14159265359)
    radius = F32(3)
    x = F32(abs(x))
    if x > radius:
        return F32(0)
    if x <= F32(1e-3):
        return F32(1)
    return radius * sinf(k_pi * x) * sinf(k_pi * x / radius) / (k_pi * k_pi * x * x)


def tf_spans(in_size, out_size):
    """scale_and_translate_op.cc ComputeSpansCore, lanczos3, antialias, translation 0, with the
    scale tf.image.resize passes (out / in in float32)."""
    scale = F32(out_size) / F32(in_size)
    inv_scale = F32(1.0 / float(scale))
    inv_translate = F32(-inv_scale * F32(0))
    kernel_scale = max(inv_scale, F32(1))
    radius = F32(3)
    span_size = min(2 * int(math.ceil(radius * kernel_scale)) + 1, in_size)
    one_over_kernel_scale = F32(1) / kernel_scale
    starts = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, span_size), F32)
    for x in range(out_size):
        sample_f = (F32(x) + F32(0.5)) * inv_scale + inv_translate
        if sample_f < 0 or sample_f > in_size:
            continue
        start = int(np.ceil(sample_f - radius * kernel_scale - F32(0.5)))
        end = int(np.floor(sample_f + radius * kernel_scale - F32(0.5)))
        start = min(max(start, 0), in_size - 1)
        end = min(max(end, 0), in_size - 1) + 1
        ws, total = [], F32(0)
        for source in range(start, end):
            w = tf_lanczos3(abs((F32(source) + F32(0.5) - sample_f) * one_over_kernel_scale))
            total = F32(total + w)
            ws.append(w)
        if abs(total) >= F32(1000) * np.finfo(F32).tiny:
            inv = F32(1) / total
            weights[x, :len(ws)] = np.array([F32(w * inv) for w in ws], F32)
        starts[x] = start
    return starts, weights


def tf_gather(img, axis, starts, weights):
    """GatherRows / GatherColumns: out = sum over the span of w * in, accumulated from 0 in order."""
    img = np.moveaxis(img, axis, 0)
    out = np.zeros((len(starts),) + img.shape[1:], F32)
    span = weights.shape[1]
    for i, start in enumerate(starts):
        real = min(start + span, img.shape[0]) - start
        acc = np.zeros(img.shape[1:], F32)
        for t in range(real):
            acc = acc + weights[i, t] * img[start + t]
        out[i] = acc
    return np.moveaxis(out, 0, axis)


def tf_resize_lanczos3(img_u8, height, width):
    """tf.image.resize(img, (h, w), 'lanczos3', antialias=True) (rows first, then columns), then
    tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8) as VLA-Adapter's resize_image_for_policy."""
    x = img_u8.astype(F32)
    x = tf_gather(x, 0, *tf_spans(img_u8.shape[0], height))
    x = tf_gather(x, 1, *tf_spans(img_u8.shape[1], width))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def tf_center_crop(img_u8, crop_scale=0.9, size=(224, 224)):
    """OpenVLA's center_crop_image: convert_image_dtype to float32 (u8 * float32(1/255)), the box of
    crop_and_resize (side sqrt(scale), centered, float32), tf.image.crop_and_resize bilinear as
    documented (crop_and_resize_op.cc), clip to [0, 1], convert_image_dtype back with saturate
    (saturate_cast(x * 255.5))."""
    x = img_u8.astype(F32) * F32(1.0 / 255.0)
    side = np.clip(np.sqrt(F32(crop_scale)), F32(0), F32(1))
    off = (F32(1) - side) / F32(2)
    y1, x1, y2, x2 = off, off, off + side, off + side
    h, w = img_u8.shape[:2]
    ch, cw = size
    height_scale = (y2 - y1) * F32(h - 1) / F32(ch - 1)
    width_scale = (x2 - x1) * F32(w - 1) / F32(cw - 1)
    in_y = np.array([y1 * F32(h - 1) + F32(y) * height_scale for y in range(ch)], F32)
    in_x = np.array([x1 * F32(w - 1) + F32(c) * width_scale for c in range(cw)], F32)
    assert (in_y >= 0).all() and (in_y <= h - 1).all() and (in_x >= 0).all() and (in_x <= w - 1).all()
    top, bottom = np.floor(in_y).astype(np.int64), np.ceil(in_y).astype(np.int64)
    left, right = np.floor(in_x).astype(np.int64), np.ceil(in_x).astype(np.int64)
    y_lerp = (in_y - top.astype(F32)).astype(F32)[:, None, None]
    x_lerp = (in_x - left.astype(F32)).astype(F32)[None, :, None]
    tl, tr = x[top][:, left], x[top][:, right]
    bl, br = x[bottom][:, left], x[bottom][:, right]
    t = tl + (tr - tl) * x_lerp
    b = bl + (br - bl) * x_lerp
    crop = np.clip(t + (b - t) * y_lerp, F32(0), F32(1))
    return np.clip(crop * F32(255.5), F32(0), F32(255)).astype(np.uint8)


def tensorflow():
    """TensorFlow (tensorflow-cpu in .venv), imported on first use: only the LIBERO resize needs it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    return tf


def tf_encode_jpeg(img_u8):
    """tf.image.encode_jpeg(img) with its defaults, as resize_image_for_policy calls it: the bytes."""
    return tensorflow().image.encode_jpeg(img_u8).numpy()


def tf_decode_image(data):
    """tf.io.decode_image(data, expand_animations=False, dtype=tf.uint8), as resize_image_for_policy."""
    tf = tensorflow()
    return tf.io.decode_image(data, expand_animations=False, dtype=tf.uint8).numpy()


def resize_image_for_policy(img_u8, size=224, jpeg=True):
    """VLA-Adapter's experiments/robot/openvla_utils.resize_image_for_policy, run by TensorFlow:
    encode_jpeg -> decode_image -> resize lanczos3 antialias -> round, clip, cast to uint8.
    jpeg=False: the same without the JPEG round trip (focusvla's jpeg_roundtrip off)."""
    tf = tensorflow()
    img = tf.convert_to_tensor(img_u8)
    if jpeg:
        img = tf.io.decode_image(tf.image.encode_jpeg(img), expand_animations=False, dtype=tf.uint8)
    img = tf.image.resize(img, (size, size), method="lanczos3", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8).numpy()


def prepare_image_for_vla(img_u8, jpeg=True, crop=True):
    """prepare_images_for_vla for one camera: resize_image_for_policy when the image is not 224x224
    (only then: 224x224 images skip the JPEG round trip too; always, whatever cfg.center_crop
    says), then OpenVLA's center crop when `crop` (cfg.center_crop)."""
    if img_u8.shape != (224, 224, 3):
        img_u8 = resize_image_for_policy(img_u8, 224, jpeg)
    return tf_center_crop(img_u8) if crop else img_u8


def smooth_image(h, w, rng):
    """A smooth synthetic camera frame (sums of random low-frequency waves per channel), as
    rendered scenes are smoother than noise; JPEG keeps more of it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            fy, fx, phase = rng.uniform(0, 4 * np.pi / h), rng.uniform(0, 4 * np.pi / w), rng.uniform(0, 2 * np.pi)
            out[..., c] += np.sin(fy * y + fx * x + phase)
    return np.clip(128 + 30 * out, 0, 255).astype(np.uint8)


def prismatic_processor(images_u8, config):
    """PrismaticImageProcessor.apply_transform for each image (resize-naive): TVF.resize (PIL
    bicubic), TVF.center_crop, TVF.to_tensor, TVF.normalize with tvf_normalize_params, per backbone;
    -> (N, 6, 224, 224) float32."""
    out = []
    for img in images_u8:
        pil = Image.fromarray(img).convert("RGB")
        parts = []
        for resize, crop, norm in zip(config["tvf_resize_params"], config["tvf_crop_params"],
                                      config["tvf_normalize_params"]):
            assert resize["interpolation"] == 3
            x = TVF.resize(pil, resize["size"], interpolation=InterpolationMode.BICUBIC, max_size=resize["max_size"],
                           antialias=resize["antialias"])
            x = TVF.center_crop(x, crop["output_size"])
            parts.append(TVF.normalize(TVF.to_tensor(x), mean=norm["mean"], std=norm["std"]))
        out.append(torch.vstack(parts))
    return torch.stack(out)


def pil_resize(img_u8, height, width, resample=Image.BICUBIC):
    return np.asarray(Image.fromarray(img_u8).resize((width, height), resample))


def libero_images():
    return [np.asarray(Image.open(os.path.join(ASSETS, "libero-sample", name)).convert("RGB"))
            for name in ("agentview.png", "wrist.png")]


def write_preprocess(out_dir, rng):
    """Cases (each a list of tensor names in preprocess.json):
    bicubic:   input (any size) -> Pillow bicubic to 224x224 (the LIBERO PNGs, the PNGs rescaled by
               Pillow to other sizes, random images of random sizes)
    resize:    input -> Pillow bilinear / bicubic / lanczos to other output sizes
    crop:      input -> tf_center_crop (0.9, 224x224)
    lanczos:   input -> TF's tf.image.resize lanczos3 antialias to 224x224, rounded to uint8 (equal
               to the NumPy transcription tf_resize_lanczos3, checked here)
    jpeg:      input -> what TensorFlow itself makes of it: tf.image.encode_jpeg's bytes, their
               tf.io.decode_image, resize_image_for_policy (JPEG + Lanczos-3) and the Lanczos-3
               resize alone (LIBERO-like 256x256 frames: the sample upscaled, random, smooth; other
               sizes down to 1x1)
    pipeline:  the Prismatic processor on the LIBERO images, plain, with the LIBERO steps (TF's
               resize_image_for_policy for the non-224 camera), and with them but no JPEG"""
    tensors, cases = {}, {"bicubic": [], "resize": [], "crop": [], "lanczos": [], "jpeg": [], "pipeline": []}

    def put(name, array):
        tensors[name] = torch.from_numpy(np.array(array, copy=True, order="C"))
        return name

    libero = libero_images()
    sources = list(libero)
    for img in libero:
        for h, w in ((256, 256), (480, 640), (128, 160), (300, 200), (224, 300), (97, 224)):
            sources.append(pil_resize(img, h, w))
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(5, 700, size=2))
        sources.append(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    for i, img in enumerate(sources):
        cases["bicubic"].append({"input": put(f"bicubic/{i}/input", img),
                                 "expected": put(f"bicubic/{i}/expected", pil_resize(img, 224, 224))})

    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
    resize_inputs = [libero[0], rng.integers(0, 256, size=(61, 83, 3), dtype=np.uint8)]
    for i, img in enumerate(resize_inputs):
        for j, (h, w) in enumerate(((37, 100), (500, 301), (224, 17), (61, 160))):
            for fname, f in filters.items():
                cases["resize"].append({"filter": fname, "input": put(f"resize/{i}/input", img),
                                        "expected": put(f"resize/{i}/{j}/{fname}", pil_resize(img, h, w, f))})

    crop_inputs = libero + [rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8),
                            rng.integers(0, 256, size=(100, 150, 3), dtype=np.uint8)]
    for i, img in enumerate(crop_inputs):
        cases["crop"].append({"input": put(f"crop/{i}/input", img), "expected": put(f"crop/{i}/expected",
                                                                                  tf_center_crop(img))})

    lanczos_inputs = [sources[2], sources[3], rng.integers(0, 256, size=(180, 250, 3), dtype=np.uint8),
                      smooth_image(256, 256, rng)]
    for i, img in enumerate(lanczos_inputs):
        expected = resize_image_for_policy(img, 224, jpeg=False)  # TensorFlow's resize itself
        # The NumPy transcription documents TF's arithmetic: it must agree.
        assert np.array_equal(tf_resize_lanczos3(img, 224, 224), expected), f"lanczos input {i}"
        cases["lanczos"].append({"input": put(f"lanczos/{i}/input", img),
                                 "expected": put(f"lanczos/{i}/expected", expected)})

    # LIBERO renders 256x256: the sample's cameras upscaled to that size (Pillow bicubic), random
    # and smooth frames of it, and other sizes (odd ones leave partial 16x16 JPEG blocks).
    jpeg_inputs = [("libero_agentview_256", sources[2]), ("libero_wrist_256", pil_resize(libero[1], 256, 256)),
                   ("random_256", rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)),
                   ("smooth_256", smooth_image(256, 256, rng)),
                   ("random_200x260", rng.integers(0, 256, size=(200, 260, 3), dtype=np.uint8)),
                   ("smooth_480x640", smooth_image(480, 640, rng)),
                   ("libero_224", libero[0]),
                   ("random_17x31", rng.integers(0, 256, size=(17, 31, 3), dtype=np.uint8)),
                   ("random_2x3", rng.integers(0, 256, size=(2, 3, 3), dtype=np.uint8)),
                   ("random_1x1", rng.integers(0, 256, size=(1, 1, 3), dtype=np.uint8))]
    for name, img in jpeg_inputs:
        encoded = tf_encode_jpeg(img)
        with_jpeg, without = resize_image_for_policy(img, 224), resize_image_for_policy(img, 224, jpeg=False)
        cases["jpeg"].append({
            "name": name, "input": put(f"jpeg/{name}/input", img),
            "encoded": put(f"jpeg/{name}/encoded", np.frombuffer(encoded, np.uint8)),
            "decoded": put(f"jpeg/{name}/decoded", tf_decode_image(encoded)),
            "policy_resize": put(f"jpeg/{name}/policy_resize", with_jpeg),
            "resize_only": put(f"jpeg/{name}/resize_only", without),
            # What the JPEG step changes in the resized image (reported by the C++ test).
            "max_diff_jpeg": int(np.abs(with_jpeg.astype(np.int64) - without).max())})

    with open(os.path.join(ASSETS, "vla-adapter-reference", "preprocessor_config.json")) as f:
        config = json.load(f)
    # Plain: the two LIBERO cameras and a 256x256 version of the first (resized by the processor).
    plain = [libero[0], libero[1], sources[2]]
    cases["pipeline"].append({"libero": False, "inputs": [put(f"pipeline/plain/{i}", im) for i, im in enumerate(plain)],
                              "expected": put("pipeline/plain/expected", prismatic_processor(plain, config).numpy())})
    # LIBERO eval: resize_image_for_policy (TF: JPEG, Lanczos) when not 224x224, center crop, then
    # the processor; and the same without the JPEG round trip.
    for jpeg, key in ((True, "libero"), (False, "libero_no_jpeg")):
        steps = [prepare_image_for_vla(im, jpeg) for im in plain]
        cases["pipeline"].append({"libero": True, "jpeg": jpeg, "inputs": [f"pipeline/plain/{i}" for i in range(len(plain))],
                                  "expected": put(f"pipeline/{key}/expected", prismatic_processor(steps, config).numpy())})
    save_file(tensors, os.path.join(out_dir, "preprocess.safetensors"))
    with open(os.path.join(out_dir, "preprocess.json"), "w") as f:
        json.dump(cases, f, indent=1)
    return prismatic_processor([libero[0]], config)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rng = np.random.default_rng(SEED)
    gen = torch.Generator().manual_seed(SEED)

    libero_pixels = write_preprocess(out_dir, rng)
    # Tiny sizes: 2 samples x 2 cameras of random pixels in the normalized range.
    for size in ("tiny16", "tiny4"):
        pixels = torch.randn(2, 2, 6, 224, 224, generator=gen)
        write_model_dir(os.path.join(out_dir, size), size, gen, pixels)
    # Full size: one real LIBERO image through the processor.
    write_model_dir(os.path.join(out_dir, "full"), "full", gen, libero_pixels.unsqueeze(0))
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
