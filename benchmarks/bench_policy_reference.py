#!/usr/bin/env python3
"""Policy::act against the Python reference pipeline, same checkpoint, same device and dtype, same
run; prints the ratio table (markdown) that the README shows.

Usage: bench_policy_reference.py BENCH_BINARY --checkpoint DIR [--device cpu|cuda]
           [--dtypes bf16,fp32,bf16-int8] [--batches 1,4,8] [--cameras 1,2] [--iters N] [--threads N]
           [--rounds N] [--json OUT.json]

BENCH_BINARY is focusvla_bench_policy. DIR is written first when missing
(scripts/make_checkpoint.py: full size, FocusVLA head, random bf16 weights, 2 shards).

The reference is tests/python/reference_policy.py, the oracle of the conformance tests: timm
encoders through Prismatic's get_intermediate_layers, the Prismatic image processor (Pillow +
torchvision), the HF tokenizer, transformers' Qwen2Model with output_hidden_states, the LM head
over every position as the released model's forward computes it (tied embedding, 151,936
logits; the policy does not use them), and the transcribed action head; eager, no_grad, in the
same dtype on the same device. A batch of B is B calls, as VLA-Adapter's predict_action takes
one observation. Each side's p50 / p99 come from --iters timed calls after warm-up; focusvla's
are Google Benchmark's counters (CUDA graphs on a GPU). A dtype with a quantization (bf16-int8,
fp32-int8, bf16-fp8) is focusvla with PolicyOptions::quantize, the rest in that dtype, against the
reference in that dtype (the reference has no quantized mode). Each focusvla dtype runs in its own
process, so each peak RSS is that dtype's own.

--rounds N repeats the whole measurement N times, the reference and focusvla alternating (the
reference stays loaded): on a machine whose speed drifts from minute to minute (a shared VM) one
side measured minutes after the other is not a fair ratio. The table then shows the medians over
the rounds and each round's speedup.
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_checkpoint  # noqa: E402
from reference_policy import ReferencePolicy  # noqa: E402

TASKS = ["put both the alphabet soup and the tomato sauce in the basket", "open the top drawer and put the bowl inside",
         "pick up the ketchup and place it in the basket", "turn on the stove"]
UNNORM = "libero_spatial_no_noops"


def cpu_name():
    """The CPU model and the instruction sets that decide the bf16 / int8 paths."""
    model, flags = platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == platform.machine():
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8"]
    return f"{model}; {' '.join(f for f in wanted if f in flags) or 'no AVX2'}"


def observations(batch, cameras, proprio_dim):
    rng = np.random.default_rng(0)
    return [([rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(cameras)], TASKS[b % 4],
             [0.01 * i for i in range(proprio_dim)]) for b in range(batch)]


def reference_times(ref, device, batch, cameras, iters, warmup):
    obs = observations(batch, cameras, 8 if ref.proprio_projector is not None else 0)

    def call():
        for images, task, state in obs:
            ref.act(images, task, state if ref.proprio_projector is not None else None, "openvla", UNNORM, lm_head=True)

    for _ in range(warmup):
        call()
    ms = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()  # ends with the actions on the host
        ms.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def ours(binary, checkpoint, device, dtype, batches, cameras, iters, threads):
    env = dict(os.environ, FOCUSVLA_BENCH_CHECKPOINT=checkpoint, FOCUSVLA_BENCH_DEVICES=device,
               FOCUSVLA_BENCH_DTYPES=dtype, FOCUSVLA_BENCH_BATCHES=",".join(map(str, batches)),
               FOCUSVLA_BENCH_CAMERAS=",".join(map(str, cameras)), FOCUSVLA_BENCH_ITERS=str(iters),
               FOCUSVLA_BENCH_UNNORM_KEY=UNNORM)
    if threads:
        env["FOCUSVLA_BENCH_THREADS"] = str(threads)
    result = subprocess.run([binary, "--benchmark_format=json"], check=True, capture_output=True, text=True, env=env)
    # "act/cpu/bf16/b1/cam2/iterations:3/manual_time" -> "act/cpu/bf16/b1/cam2"
    return {b["name"].split("/iterations")[0]: b for b in json.loads(result.stdout)["benchmarks"]}


def median_row(rounds):
    """One configuration's rows of every round -> one row: medians of the times, the speedup as the
    median of the rounds' speedups (each from one round's two sides), the rounds' speedups kept."""
    row = dict(rounds[-1])
    for key in ("p50_ms", "p99_ms", "actions_per_s", "reference_p50_ms", "reference_p99_ms", "speedup"):
        row[key] = float(np.median([r[key] for r in rounds]))
    row["stages"] = {k: (float(np.median([r["stages"][k] for r in rounds]))
                         if all(r["stages"][k] is not None for r in rounds) else None) for k in row["stages"]}
    row["round_speedups"] = [r["speedup"] for r in rounds]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--cameras", default="1,2")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    iters = args.iters or (100 if args.device == "cuda" else 3)
    warmup = 5 if args.device == "cuda" else 1
    batches = [int(b) for b in args.batches.split(",")]
    cameras = [int(c) for c in args.cameras.split(",")]
    if not os.path.exists(os.path.join(args.checkpoint, "config.json")):
        print(f"writing a full-size checkpoint (random weights) to {args.checkpoint} ...", file=sys.stderr)
        make_checkpoint.write_directory(args.checkpoint, size="full", dtype="bf16", shards=2, head="focus", seed=7)

    refs = {}  # base dtype -> the reference policy, loaded once
    per_round = []  # one list of rows per round
    for _ in range(args.rounds):
        rows = []
        references = {}  # base dtype -> {(batch, cameras): (p50, p99)}, this round's
        for dtype in args.dtypes.split(","):
            base = dtype.split("-")[0]
            if base not in references:
                if base not in refs:
                    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[base]
                    refs[base] = ReferencePolicy(args.checkpoint, "full", torch_dtype).to(args.device)
                references[base] = {(b, c): reference_times(refs[base], args.device, b, c, iters, warmup)
                                    for c in cameras for b in batches}
                if args.rounds == 1:  # nothing will time it again: free its memory for focusvla's run
                    del refs[base]
                    gc.collect()
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
            reference = references[base]
            mine = ours(args.binary, args.checkpoint, args.device, dtype, batches, cameras, iters, args.threads)
            for c in cameras:
                for b in batches:
                    act = mine[f"act/{args.device}/{dtype}/b{b}/cam{c}"]
                    stages = mine.get(f"stages/{args.device}/{dtype}/b{b}/cam{c}", {})
                    rp50, rp99 = reference[(b, c)]
                    rows.append(dict(device=args.device, dtype=dtype, reference_dtype=base, batch=b, cameras=c,
                                     p50_ms=act["p50_ms"], p99_ms=act["p99_ms"], actions_per_s=act["actions_per_s"],
                                     execution=act.get("label", ""), gpu_peak_gb=act.get("gpu_peak_gb"),
                                     gpu_weights_gb=act.get("gpu_weights_gb"), rss_peak_gb=act.get("rss_peak_gb"),
                                     load_s=act.get("load_s"),
                                     stages={k: stages.get(k + "_ms") for k in ("preprocess", "vision", "projector", "llm", "head")},
                                     reference_p50_ms=rp50, reference_p99_ms=rp99, speedup=rp50 / act["p50_ms"]))
        per_round.append(rows)
    rows = [median_row([r[i] for r in per_round]) for i in range(len(per_round[0]))]

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name()
    print(f"\nPolicy::act vs the Python reference, {args.device} ({device_name}, {os.cpu_count()} CPUs), "
          f"full-size FocusVLA, 224x224 uint8 images on the host to actions on the host, p50 of {iters} calls\n")
    if args.rounds > 1:
        print(f"Medians over {args.rounds} rounds (reference and focusvla alternating); the speedup is the median of "
              "the rounds' speedups, each round's in brackets.\n")
    print("| focusvla | batch | cameras | focusvla p50 ms | p99 ms | actions/s | reference | p50 ms | p99 ms | speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rounds = f" ({', '.join(f'{x:.2f}x' for x in r['round_speedups'])})" if args.rounds > 1 else ""
        print(f"| {r['dtype']} | {r['batch']} | {r['cameras']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['actions_per_s']:.0f} | {r['reference_dtype']} | {r['reference_p50_ms']:.2f} | "
              f"{r['reference_p99_ms']:.2f} | {r['speedup']:.2f}x{rounds} |")
    print("\nfocusvla stages (eager, p50 ms): preprocess / vision / projector / llm / head")
    for r in rows:
        s = r["stages"]
        if all(v is not None for v in s.values()):
            print(f"  {r['dtype']} b{r['batch']} cam{r['cameras']}: " + " / ".join(f"{s[k]:.2f}" for k in s))
    print("\nfocusvla memory and load time")
    for r in rows:
        load = f", Policy::load {r['load_s']:.1f} s" if r.get("load_s") is not None else ""
        if r["gpu_peak_gb"] is not None:
            print(f"  {r['dtype']} b{r['batch']} cam{r['cameras']}: GPU weights {r['gpu_weights_gb']:.2f} GB, "
                  f"peak {r['gpu_peak_gb']:.2f} GB{load}")
        elif r["rss_peak_gb"] is not None:
            print(f"  {r['dtype']} b{r['batch']} cam{r['cameras']}: process peak RSS {r['rss_peak_gb']:.2f} GB{load}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "device_name": device_name, "iters": iters, "rounds": args.rounds,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
