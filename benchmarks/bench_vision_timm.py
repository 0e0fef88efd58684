#!/usr/bin/env python3
"""The vision encoders, focusvla (C++) against timm, same shapes, same run.

Usage: bench_vision_timm.py BENCH_BINARY [--repeats 3] [--rounds 1] [--threads N] [--cases dino_fp32,...]

For each case, runs BENCH_BINARY (focusvla_bench_vision) on that case alone with
--benchmark_format=json, then times the reference on the same work right after, so that both see
the same load on the machine (--rounds R repeats the whole alternation); prints milliseconds, wall and process CPU time (the minimum over
the repetitions: the figures least disturbed by other processes), and the ratios
reference / focusvla:
  dino_*, siglip_*   timm VisionTransformer (DINOv2-L/14-reg4, SigLIP-SO400M/14 at 224, random
                     weights) through get_intermediate_layers(x, n={depth - 2}), the path Prismatic
                     runs, one 224x224 image, fp32 and bf16 (eval, inference_mode)
  *_bf16_f32mm       focusvla's bf16 with the linear layers as fp32 matmuls of the upcast operands
                     (nn::set_cpu_bf16_matmul kFloat32), against timm's bf16
  tower_*            both encoders + the projector (2176 -> 8704 -> 896 -> 896), as
                     VLA-Adapter's PrismaticVisionBackbone + projector run one camera
  preprocess_*       Prismatic's image processor (PIL bicubic resize, to_tensor, normalize) of one
                     480x640 image; the LIBERO variant adds the TF steps, whose reference
                     (TensorFlow) is not installed: no ratio
Both sides use the same number of threads (torch's default unless --threads).
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

CASES = ["dino_fp32", "siglip_fp32", "dino_bf16", "siglip_bf16", "dino_bf16_f32mm", "siglip_bf16_f32mm",
         "tower_fp32", "tower_bf16", "tower_bf16_f32mm", "preprocess_pil_480x640", "preprocess_libero_256"]


def cpp_filter(label):
    kind, _, rest = label.partition("_")
    if kind in ("dino", "siglip"):
        return f"BM_Encoder/{label}/"
    return f"BM_{kind.capitalize()}/{rest}/"


def cpp_time(binary, label, threads):
    """Minimum (real, process CPU) time in ms over the repetitions of one case."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [binary, "--benchmark_format=json", f"--benchmark_filter={cpp_filter(label)}"]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    runs = [b for b in report["benchmarks"] if b.get("run_type", "iteration") == "iteration"]
    if not runs:
        return (None, None), report.get("context", {})
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[runs[0]["time_unit"]]
    return (min(b["real_time"] for b in runs) * scale, min(b["process_cpu_ms"] for b in runs)), report.get("context", {})


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


def encoder(name, dtype):
    with torch.device("meta"):
        if name == "dino":
            m = VisionTransformer(img_size=224, patch_size=14, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0,
                                  num_classes=0, init_values=1e-5, reg_tokens=4, no_embed_class=True)
        else:
            m = VisionTransformer(img_size=224, patch_size=14, embed_dim=1152, depth=27, num_heads=16,
                                  mlp_ratio=3.7362, num_classes=0, class_token=False, global_pool="map")
    m = m.to_empty(device="cpu").eval()
    randomize(m)
    return m.to(dtype)


def featurize(m, x):
    """Prismatic: featurizer.forward = get_intermediate_layers(n={len(blocks) - 2})."""
    return m.get_intermediate_layers(x, n={len(m.blocks) - 2})[0]


def best_of(fn, repeats):
    """Minimum (wall, process CPU) time in ms over `repeats` calls after a warm-up."""
    fn()  # warm-up
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall * 1e3, cpu * 1e3


def reference_time(label, repeats):
    """(wall, process CPU) milliseconds of the reference for one case (None when there is none)."""
    dtype = torch.bfloat16 if "bf16" in label else torch.float32
    torch.manual_seed(1)
    if label.startswith(("dino", "siglip")):
        m = encoder(label.split("_")[0], dtype)
        x = torch.randn(1, 3, 224, 224).to(dtype)
        with torch.inference_mode():
            return best_of(lambda: featurize(m, x), repeats)
    if label.startswith("tower"):
        dino, siglip = encoder("dino", dtype), encoder("siglip", dtype)
        projector = torch.nn.Sequential(torch.nn.Linear(2176, 8704), torch.nn.GELU(), torch.nn.Linear(8704, 896),
                                        torch.nn.GELU(), torch.nn.Linear(896, 896)).eval()
        randomize(projector)
        projector.to(dtype)
        pixels = torch.randn(1, 6, 224, 224).to(dtype)

        def tower():
            img, fused = torch.split(pixels, [3, 3], dim=1)
            return projector(torch.cat([featurize(dino, img), featurize(siglip, fused)], dim=2))

        with torch.inference_mode():
            return best_of(tower, repeats)
    if label == "preprocess_pil_480x640":
        image = np.random.default_rng(2).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        norms = [([0.484375, 0.455078125, 0.40625], [0.228515625, 0.2236328125, 0.224609375]),
                 ([0.5] * 3, [0.5] * 3)]

        def processor():  # PrismaticImageProcessor.apply_transform, resize-naive
            pil = Image.fromarray(image).convert("RGB")
            parts = []
            for mean, std in norms:
                resized = TVF.resize(pil, [224, 224], interpolation=InterpolationMode.BICUBIC, antialias=True)
                parts.append(TVF.normalize(TVF.to_tensor(TVF.center_crop(resized, [224, 224])), mean=mean, std=std))
            return torch.vstack(parts)

        return best_of(processor, 20)
    return None, None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="path to focusvla_bench_vision")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="alternate focusvla and the reference this often")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ", ".join(CASES))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def best(a, b):
        return tuple(min(x, y) if x is not None and y is not None else x if y is None else y for x, y in zip(a, b))

    results, context = {}, {}
    for _ in range(args.rounds):
        for label in args.cases.split(","):
            c, context = cpp_time(args.binary, label, args.threads)
            r = reference_time(label.replace("_f32mm", ""), args.repeats)
            old_c, old_r = results.get(label, ((None, None), (None, None)))
            results[label] = (best(old_c, c), best(old_r, r))
            print(f"  {label}: focusvla {c} ms, reference {r} ms (wall, cpu)", file=sys.stderr, flush=True)
    rows = [(label, *results[label]) for label in args.cases.split(",")]

    def cell(v, width):
        return f"{v:>{width}.1f}" if v is not None else f"{'-':>{width}}"

    def ratio(a, b, width):
        return f"{b / a:>{width}.2f}" if a and b else f"{'-':>{width}}"

    print(f"Vision encoders at full size, one 224x224 image, {torch.get_num_threads()} threads, "
          f"{context.get('num_cpus', '?')} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"torch {torch.__version__}, timm {timm.__version__}; minimum over the repetitions; "
          "cpu = CPU time of all threads of the process")
    print(f"{'case':<24} {'focusvla ms':>12} {'ref ms':>9} {'ratio':>6}   {'focusvla cpu':>12} {'ref cpu':>9} {'ratio':>6}")
    for label, (cw, cc), (rw, rc) in rows:
        print(f"{label:<24} {cell(cw, 12)} {cell(rw, 9)} {ratio(cw, rw, 6)}   {cell(cc, 12)} {cell(rc, 9)} {ratio(cc, rc, 6)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
