#!/usr/bin/env python3
"""The Qwen2.5-0.5B decoder, focusvla (C++) against transformers' Qwen2Model, same shape, same run.

Usage: bench_llm_hf.py BENCH_BINARY [--length 600] [--repeats 3] [--threads N]

Runs BENCH_BINARY (focusvla_bench_llm) with --benchmark_format=json for the C++ times, then
times transformers' Qwen2Model (random weights, the released architecture with a 1024-row
embedding table, SDPA attention, eval, no_grad) on inputs_embeds (1, L, 896) with
output_hidden_states=True, fp32 and bf16, best of --repeats after one warm-up, and prints
milliseconds per forward and the ratio transformers / focusvla. The C++ side also reports bf16
computed with fp32 matmuls (bf16_fp32mm, CpuBf16Matmul::kFloat32), compared with transformers'
bf16.
Both run with the same number of threads (torch's default unless --threads).
"""

import argparse
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
        times[dtype] = b["real_time"] * scale
    return times, report.get("context", {})


def hf_times(length, repeats):
    torch.manual_seed(0)
    model = Qwen2Model(Qwen2Config(**CONFIG, attn_implementation="sdpa")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    times = {}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = model.to(dtype)
        x = torch.randn(1, length, CONFIG["hidden_size"]).to(dtype)
        best = float("inf")
        with torch.no_grad():
            model(inputs_embeds=x, output_hidden_states=True, use_cache=False)  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                out = model(inputs_embeds=x, output_hidden_states=True, use_cache=False)
                best = min(best, time.perf_counter() - start)
        assert len(out.hidden_states) == CONFIG["num_hidden_layers"] + 1
        times[label] = best * 1e3
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="path to focusvla_bench_llm")
    parser.add_argument("--length", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cpp, context = cpp_times(args.binary, args.length, args.threads)
    hf = hf_times(args.length, args.repeats)
    import transformers
    print(f"Qwen2.5-0.5B decoder, inputs_embeds (1, {args.length}, 896), all 25 hidden states, "
          f"{torch.get_num_threads()} threads, {context.get('num_cpus', '?')} CPUs")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'dtype':<12} {'focusvla ms':>12} {'transformers ms':>16} {'ratio hf/focusvla':>18}")
    # bf16_fp32mm: focusvla's bf16 with fp32 matmuls (CpuBf16Matmul::kFloat32) against
    # transformers' bf16.
    for dtype in ("fp32", "bf16", "bf16_fp32mm"):
        ref = hf["bf16" if dtype.startswith("bf16") else dtype]
        if dtype not in cpp:
            print(f"{dtype:<12} {'missing':>12}")
            continue
        print(f"{dtype:<12} {cpp[dtype]:>12.1f} {ref:>16.1f} {ref / cpp[dtype]:>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
