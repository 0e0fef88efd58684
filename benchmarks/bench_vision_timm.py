#!/usr/bin/env python3
"""The vision encoders, focusvla (C++) against timm, same shapes, same run.

Usage: bench_vision_timm.py BENCH_BINARY [--repeats 3] [--threads N] [--skip-cpp]

Runs BENCH_BINARY (focusvla_bench_vision) with --benchmark_format=json for the C++ times, then
times the reference on the same work and prints milliseconds and the ratio reference / focusvla:
  dino_*, siglip_*   timm VisionTransformer (DINOv2-L/14-reg4, SigLIP-SO400M/14 at 224, random
                     weights) through get_intermediate_layers(x, n={depth - 2}), the path Prismatic
                     runs, one 224x224 image, fp32 and bf16 (eval, inference_mode)
  tower_*            both encoders + the projector (2176 -> 8704 -> 896 -> 896), as
                     VLA-Adapter's PrismaticVisionBackbone + projector run one camera
  *_bf16_f32mm       focusvla's bf16 with the linear layers as fp32 matmuls of the upcast operands
                     (set_bf16_matmul_in_fp32), against timm's bf16
  preprocess_*       Prismatic's image processor (PIL bicubic resize, to_tensor, normalize) of one
                     480x640 image; the LIBERO variant adds the TF steps, for which the reference
                     (TensorFlow) is not installed: no ratio
Best of --repeats after one warm-up. Both sides use the same number of threads (torch's default
unless --threads).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import timm
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TVF


def cpp_times(binary, threads):
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run([binary, "--benchmark_format=json"], check=True, capture_output=True, text=True, env=env)
    report = json.loads(result.stdout)
    times = {}
    for b in report["benchmarks"]:
        # "BM_Encoder/dino_fp32/iterations:3/real_time" -> "dino_fp32"; "BM_Tower/fp32/..." -> "tower_fp32"
        parts = b["name"].split("/")
        label = parts[1] if parts[0] == "BM_Encoder" else parts[0][3:].lower() + "_" + parts[1]
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        times[label] = b["real_time"] * scale
    return times, report.get("context", {})


def encoder(name):
    with torch.device("meta"):
        if name == "dino":
            m = VisionTransformer(img_size=224, patch_size=14, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                                  num_classes=0, init_values=1e-5, reg_tokens=4, no_embed_class=True)
        else:
            m = VisionTransformer(img_size=224, patch_size=14, embed_dim=1152, depth=27, num_heads=16,
                                  mlp_ratio=3.7362, num_classes=0, class_token=False, global_pool="map")
    m = m.to_empty(device="cpu").eval()
    randomize(m)
    return m


@torch.no_grad()
def randomize(module):
    torch.manual_seed(0)
    for name, p in module.named_parameters():
        if "norm" in name and name.endswith("weight"):
            p.fill_(1.0)
        elif name.endswith("gamma"):
            p.fill_(0.1)
        else:
            p.normal_(0.0, 0.02)


def best_of(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def reference_times(repeats):
    times = {}
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224)
    encoders = {}
    for name in ("dino", "siglip"):
        m = encoders[name] = encoder(name)
        featurize = lambda m=m, x=x: m.get_intermediate_layers(x, n={len(m.blocks) - 2})
        with torch.inference_mode():
            times[f"{name}_fp32"] = best_of(featurize, repeats)
            m.to(torch.bfloat16)
            xb = x.to(torch.bfloat16)
            times[f"{name}_bf16"] = best_of(lambda: m.get_intermediate_layers(xb, n={len(m.blocks) - 2}), repeats)
            m.float()

    projector = torch.nn.Sequential(torch.nn.Linear(2176, 8704), torch.nn.GELU(), torch.nn.Linear(8704, 896),
                                    torch.nn.GELU(), torch.nn.Linear(896, 896)).eval()
    randomize(projector)
    pixels = torch.randn(1, 6, 224, 224)
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for m in (*encoders.values(), projector):
            m.to(dtype)
        p = pixels.to(dtype)

        def tower():
            img, fused = torch.split(p, [3, 3], dim=1)
            a = encoders["dino"].get_intermediate_layers(img, n={len(encoders["dino"].blocks) - 2})[0]
            b = encoders["siglip"].get_intermediate_layers(fused, n={len(encoders["siglip"].blocks) - 2})[0]
            return projector(torch.cat([a, b], dim=2))

        with torch.inference_mode():
            times[f"tower_{label}"] = best_of(tower, max(1, repeats - 1))
    del encoders, projector

    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    norms = [([0.484375, 0.455078125, 0.40625], [0.228515625, 0.2236328125, 0.224609375]), ([0.5] * 3, [0.5] * 3)]

    def processor():
        pil = Image.fromarray(image).convert("RGB")
        parts = []
        for mean, std in norms:
            resized = TVF.resize(pil, [224, 224], interpolation=InterpolationMode.BICUBIC, antialias=True)
            parts.append(TVF.normalize(TVF.to_tensor(TVF.center_crop(resized, [224, 224])), mean=mean, std=std))
        return torch.vstack(parts)

    times["preprocess_pil_480x640"] = best_of(processor, 20)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="path to focusvla_bench_vision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--skip-cpp", action="store_true", help="time the reference only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cpp, context = ({}, {}) if args.skip_cpp else cpp_times(args.binary, args.threads)
    ref = reference_times(args.repeats)
    print(f"Vision encoders at full size, one 224x224 image, {torch.get_num_threads()} threads, "
          f"{context.get('num_cpus', '?')} CPUs")
    print(f"torch {torch.__version__}, timm {timm.__version__}")
    print(f"{'case':<24} {'focusvla ms':>12} {'reference ms':>13} {'ratio ref/focusvla':>19}")
    for label in ("dino_fp32", "siglip_fp32", "dino_bf16", "siglip_bf16", "dino_bf16_f32mm", "siglip_bf16_f32mm",
                  "tower_fp32", "tower_bf16", "tower_bf16_f32mm", "preprocess_pil_480x640", "preprocess_libero_256"):
        # *_f32mm: focusvla's bf16 with fp32 matmuls, against timm's (native) bf16.
        c, r = cpp.get(label), ref.get(label.replace("_f32mm", ""))
        cs = f"{c:>12.1f}" if c is not None else f"{'-':>12}"
        rs = f"{r:>13.1f}" if r is not None else f"{'-':>13}"
        ratio = f"{r / c:>19.2f}" if c and r else f"{'-':>19}"
        print(f"{label:<24} {cs} {rs} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
