#!/usr/bin/env python3
"""The Qwen2.5-0.5B decoder, focusvla (C++) against transformers' Qwen2Model, same shape, same run.

Usage: bench_llm_hf.py BENCH_BINARY [--length 600] [--repeats 2] [--rounds 2] [--threads N]

Runs BENCH_BINARY (focusvla_bench_llm) with --benchmark_format=json for the C++ times, then
times transformers' Qwen2Model (random weights, the released architecture with a 1024-row
embedding table, SDPA attention, eval, no_grad) on inputs_embeds (1, L, 896) with
output_hidden_states=True, fp32 and bf16, best of --repeats after one warm-up; the two sides
alternate for --rounds and each keeps its best time. Prints milliseconds per forward, wall and
process CPU time, and the ratios transformers / focusvla. The C++ side also reports bf16
computed with fp32 matmuls (bf16_fp32mm, CpuBf16Matmul::kFloat32), compared with transformers'
bf16.
Both run with the same number of threads (torch's default unless --threads).
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2Model

CONFIG = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
              vocab_size=1024, hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False)


def cpp_times(binary, length, threads):
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [binary, "--benchmark_format=json", "--benchmark_filter=BM_Qwen2Forward/.*/%d/" % length]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    report = json.loads(result.stdout)
    times = {}
    for b in report["benchmarks"]:
        dtype = b["name"].split("/")[1]
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        times[dtype] = (b["real_time"] * scale, b["cpu_time"] * scale)
    return times, report.get("context", {})


def hf_models():
    torch.manual_seed(0)
    model = Qwen2Model(Qwen2Config(**CONFIG, attn_implementation="sdpa")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return {"fp32": model, "bf16": copy.deepcopy(model).to(torch.bfloat16)}


def hf_times(models, length, repeats):
    times = {}
    for label, model in models.items():
        dtype = next(model.parameters()).dtype
        x = torch.randn(1, length, CONFIG["hidden_size"]).to(dtype)
        best = (float("inf"), float("inf"))
        with torch.no_grad():
            model(inputs_embeds=x, output_hidden_states=True, use_cache=False)  # warm-up
            for _ in range(repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                out = model(inputs_embeds=x, output_hidden_states=True, use_cache=False)
                best = min(best, ((time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3))
        assert len(out.hidden_states) == CONFIG["num_hidden_layers"] + 1
        times[label] = best
    return times


def merge_min(into, times):
    """Per variant, the best wall time and (separately) the best process CPU time."""
    for k, (wall, cpu) in times.items():
        old = into.get(k, (float("inf"), float("inf")))
        into[k] = (min(old[0], wall), min(old[1], cpu))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="path to focusvla_bench_llm")
    parser.add_argument("--length", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2, help="timed transformers calls per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of C++ and transformers runs")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # Alternate the two sides and keep each one's best, so that load from other processes on a
    # shared machine biases neither.
    models = hf_models()
    cpp, hf, context = {}, {}, {}
    for _ in range(args.rounds):
        times, context = cpp_times(args.binary, args.length, args.threads)
        merge_min(cpp, times)
        merge_min(hf, hf_times(models, args.length, args.repeats))
    import transformers
    print(f"Qwen2.5-0.5B decoder, inputs_embeds (1, {args.length}, 896), all 25 hidden states, "
          f"{torch.get_num_threads()} threads, {context.get('num_cpus', '?')} CPUs")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print("wall = best wall-clock ms per forward; cpu = best process CPU ms (all threads), which on a")
    print("shared machine reflects the work done better than wall time. ratio = transformers / focusvla.")
    print(f"{'dtype':<12} {'focusvla wall':>14} {'hf wall':>10} {'ratio':>6} {'focusvla cpu':>13} {'hf cpu':>10} {'ratio':>6}")
    # bf16_fp32mm: focusvla's bf16 with fp32 matmuls (CpuBf16Matmul::kFloat32) against
    # transformers' bf16.
    for dtype in ("fp32", "bf16", "bf16_fp32mm"):
        ref = hf["bf16" if dtype.startswith("bf16") else dtype]
        if dtype not in cpp:
            print(f"{dtype:<12} {'missing':>14}")
            continue
        ours = cpp[dtype]
        print(f"{dtype:<12} {ours[0]:>14.1f} {ref[0]:>10.1f} {ref[0] / ours[0]:>6.2f} "
              f"{ours[1]:>13.1f} {ref[1]:>10.1f} {ref[1] / ours[1]:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
