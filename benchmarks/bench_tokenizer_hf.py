#!/usr/bin/env python3
"""Times HF tokenizers (Qwen2.5) on 10,000 robot instructions and compares with ours.

    python benchmarks/bench_tokenizer_hf.py [--bench PATH/TO/bench_tokenizer] [--assets DIR]

The instructions are generated here (seeded) and handed to the C++ benchmark through
$FOCUSVLA_BENCH_INSTRUCTIONS, so both sides tokenize the same strings; the script checks that
the ids agree on a sample. Without --bench only the HF figures are printed.
Figures are microseconds per instruction of CPU time of the calling thread (what Google Benchmark
reports as CPU), so that other load on a shared machine does not count; encode_batch runs on all
cores and is timed by the wall clock.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from transformers import AutoTokenizer

COUNT = 10000
SEED = 7

VERBS = ["put", "place", "pick up", "open", "close", "turn on", "turn off", "push", "move",
         "stack", "slide", "lift", "grab", "pour", "wipe"]
OBJECTS = ["the black bowl", "the alphabet soup", "the cream cheese", "the ketchup",
           "the tomato sauce", "the butter", "the milk", "the wine bottle",
           "the top drawer of the cabinet", "the stove", "the microwave", "the red mug",
           "the yellow and white mug", "the chocolate pudding", "the frying pan", "the moka pot",
           "the book", "both pots", "the salad dressing", "the 2nd plate"]
PLACES = ["on the plate", "in the basket", "on top of the cabinet", "into the drawer",
          "on the stove", "in the tray", "to the left of the plate", "next to the cookie box",
          "behind the caddy", "in the back compartment of the caddy"]


def instructions(count):
    rng = random.Random(SEED)
    out = []
    for i in range(count):
        text = f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}"
        if i % 5 == 0:
            text += f" and {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        out.append(text)
    return out


def best_of(runs, fn, clock=time.thread_time):
    """Best time of `runs` calls by `clock`, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def time_hf(asset_dir, texts, runs):
    tok = AutoTokenizer.from_pretrained(asset_dir)
    backend = tok.backend_tokenizer
    n = len(texts)

    def encode_each():
        for text in texts:
            backend.encode(text, add_special_tokens=False)

    results = {}
    encode_each()  # warm HF's own BPE word cache
    results["hf tokenizers encode, warm cache"] = best_of(runs, encode_each) / n
    results["hf tokenizers encode_batch (all cores), warm"] = best_of(
        runs, lambda: backend.encode_batch(texts, add_special_tokens=False), time.perf_counter) / n
    results["hf transformers tok(text), warm"] = best_of(
        runs, lambda: [tok(text, add_special_tokens=False)["input_ids"] for text in texts]) / n
    backend.model._resize_cache(0)
    results["hf tokenizers encode, no cache"] = best_of(runs, encode_each) / n
    backend.model._resize_cache(10000)
    return tok, results


def run_ours(binary, assets, texts):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
        path = f.name
    try:
        env = dict(os.environ, FOCUSVLA_BENCH_INSTRUCTIONS=path, FOCUSVLA_ASSETS=assets)
        out = subprocess.run([binary, "--benchmark_format=json"], env=env, check=True,
                             capture_output=True, text=True).stdout
    finally:
        os.unlink(path)
    report = json.loads(out)
    # items_per_second is computed from CPU time.
    seconds = {b["name"]: 1.0 / b["items_per_second"] for b in report["benchmarks"]}
    ids = {b["name"]: b["ids_per_instruction"] for b in report["benchmarks"]}
    return seconds, ids, report["context"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--bench", help="path to the bench_tokenizer binary")
    parser.add_argument("--assets", default=os.environ.get("FOCUSVLA_ASSETS"),
                        help="assets directory holding qwen2.5-tokenizer/ (default $FOCUSVLA_ASSETS)")
    parser.add_argument("--runs", type=int, default=5, help="HF timing repeats (best is kept)")
    args = parser.parse_args()
    if not args.assets:
        sys.exit("bench_tokenizer_hf.py: give --assets or set FOCUSVLA_ASSETS")
    asset_dir = os.path.join(args.assets, "qwen2.5-tokenizer")
    texts = instructions(COUNT)

    tok, hf = time_hf(asset_dir, texts, args.runs)
    hf_ids = sum(len(e.ids) for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False))
    print(f"{COUNT} instructions, mean {sum(map(len, texts)) / COUNT:.1f} characters")
    print(f"{'':48s} {'us/instruction':>14s}")
    for name, seconds in hf.items():
        print(f"{name:48s} {seconds * 1e6:14.2f}")
    if not args.bench:
        return
    ours, our_ids, context = run_ours(args.bench, args.assets, texts)
    # A cheap agreement check (exactness itself is tested by tests/text against the oracle).
    if abs(our_ids["BM_EncodeWarmCache"] - hf_ids / COUNT) > 1e-9:
        sys.exit(f"id counts differ: ours {our_ids['BM_EncodeWarmCache']} vs HF {hf_ids / COUNT}")
    for name, seconds in ours.items():
        print(f"{'focusvla ' + name:48s} {seconds * 1e6:14.2f}")
    print(f"({context.get('num_cpus', '?')} CPUs; CPU time of the calling thread)")
    pairs = [("BM_EncodeWarmCache", "hf tokenizers encode, warm cache"),
             ("BM_EncodeNoCache", "hf tokenizers encode, no cache"),
             ("BM_EncodeWarmCache", "hf transformers tok(text), warm")]
    for our_name, hf_name in pairs:
        if our_name in ours:
            print(f"speed-up of {our_name} over '{hf_name}': {hf[hf_name] / ours[our_name]:.2f}x")


if __name__ == "__main__":
    main()
