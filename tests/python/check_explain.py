#!/usr/bin/env python3
"""`focusvla explain` end to end: PNG files on disk, checkpoints and oracle written by
gen_policy.py (explain_oracle.py: the Python reference's kept indices, softmax weights, gates and
ablated actions).

1. On the LIBERO sample with the reference's evaluation settings, explain.json holds the maps,
   gates, attention masses and ablation distances the reference computes, and the pictures are
   PNGs (decoded with Pillow) of each camera's size, with the charts.
2. Cameras of other sizes: every heat map has its camera's size; --per-block writes one per
   block and camera.
3. A checkpoint whose visual branch is switched off gets the verdict "none", a normal one
   "uses-vision"; the terminal shows the reliance table and the verdict line.
4. Bad arguments: named errors, exit status 2 (usage) or 1 (bad input).

    check_explain.py FOCUSVLA_CLI POLICY_DATA_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.environ.get("FOCUSVLA_ASSETS", os.path.join(HERE, "..", "..", "assets"))
SAMPLE = os.path.join(ASSETS, "libero-sample")
FAILURES = []


def check(condition, message):
    print(("ok    " if condition else "FAIL  ") + message)
    if not condition:
        FAILURES.append(message)


def run(cli, args):
    return subprocess.run([cli] + args, capture_output=True, text=True, errors="replace")


def explain_args(data, c, out, images=None):
    images = images or [os.path.join(SAMPLE, "agentview.png"), os.path.join(SAMPLE, "wrist.png")]
    args = ["explain", "--checkpoint", os.path.join(data, c["checkpoint"]), "--instruction", c["instruction"],
            "--proprio", ",".join(repr(v) for v in c["proprio"]), "--unnorm-key", c["unnorm_key"], "--out", out]
    for image in images:
        args += ["--image", image]
    return args


def max_diff(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.inf if a.shape != b.shape else float(np.abs(a - b).max())


def check_pngs(out, files, sizes, name):
    """Every heat map decodes and has its camera's (width, height); the charts decode."""
    for f in files:
        path = os.path.join(out, f["file"])
        if not f["file"].endswith(".png"):
            continue
        try:
            with Image.open(path) as im:
                im.load()
                size, fmt = im.size, im.format
        except Exception as e:  # noqa: BLE001
            check(False, f"{name}: {f['file']} decodes with Pillow ({e})")
            continue
        if "camera" in f:
            want = sizes[f["camera"]]
            check(fmt == "PNG" and size == want, f"{name}: {f['file']} is a PNG of camera {f['camera']}'s size "
                  f"{want[0]}x{want[1]} (got {size[0]}x{size[1]})")
        else:
            check(fmt == "PNG" and size[0] >= 480, f"{name}: chart {f['file']} is a PNG ({size[0]}x{size[1]})")


def check_against_oracle(cli, data, c, tmp):
    name = c["name"]
    out = os.path.join(tmp, name)
    r = run(cli, explain_args(data, c, out) + ["--json"])
    check(r.returncode == 0, f"{name}: explain exits 0 ({r.stderr.strip()[-300:]})")
    if r.returncode != 0:
        return None
    j = json.loads(r.stdout)
    check(j == json.load(open(os.path.join(out, "explain.json"))), f"{name}: --json prints explain.json")
    check(j["settings"]["prompt_format"] == c["prompt_format"] and j["settings"]["center_crop"] == c["center_crop"],
          f"{name}: the reference's evaluation settings by default")
    check(max_diff(j["actions"], c["actions"]) <= 1e-4 * np.abs(c["actions"]).max(), f"{name}: the normal actions")
    for kind in ("kept", "attention"):
        if kind in c:
            got = j[kind]
            d = max(max_diff(got["positions"], c[kind]["positions"]),
                    max_diff([cam["grid"] for cam in got["cameras"]], c[kind]["grids"]))
            check(d <= 1e-9, f"{name}: {kind} map equals the reference's on positions and grids (max diff {d:.1e})")
        else:
            check(j[kind] is None, f"{name}: no {kind} map")
    for b, want in enumerate(c["blocks"]):
        if "gate" in want:
            g = j["gates"][b]
            check(abs(g["mean"] - want["gate"]["mean"]) <= 1e-9 and g["below_0_1"] == want["gate"]["below_0_1"]
                  and g["above_0_9"] == want["gate"]["above_0_9"], f"{name}: block {b} gate statistics")
        if "scalar_gate" in want:
            check(abs(j["scalar_gates"][b] - want["scalar_gate"]) <= 1e-7, f"{name}: block {b} tanh(g)")
        if "attention_columns" in want:
            cols = np.asarray(want["attention_columns"])
            chunk, nq = len(j["actions"]), j["query_positions"]
            m = j["source_mass"][b]
            want_mass = [cols[:chunk].sum(), cols[chunk:chunk + nq].sum(), cols[chunk + nq], cols[chunk + nq + 1:].sum()]
            got_mass = [m["self"], m["action_queries"], m["proprio"], m["visual"]]
            check(max_diff(got_mass, want_mass) <= 1e-9, f"{name}: block {b} attention mass per source "
                  f"(self {got_mass[0]:.4f}, queries {got_mass[1]:.4f}, proprio {got_mass[2]:.4f}, visual {got_mass[3]:.4f})")
    for got, want in zip(j["ablations"], c["ablations"]):
        ok = got["name"] == want["name"] and abs(got["mean_distance"] - want["mean_distance"]) <= 1e-6 \
            and abs(got["max_distance"] - want["max_distance"]) <= 1e-6
        check(ok, f"{name}: {got['name']} moves the actions {got['mean_distance']:.3e} (reference {want['mean_distance']:.3e})")
    check(len(j["ablations"]) == len(c["ablations"]), f"{name}: {len(c['ablations'])} ablations")
    sizes = [Image.open(p).size for p in j["images"]]
    check_pngs(out, j["files"], sizes, name)
    expected = {f"{k}_camera{i}.png" for k in ("kept", "attention") if k in c for i in range(c["cameras"])}
    expected |= {"gates.png"} | ({"sources.png"} if j["source_mass"] else set()) | {"explain.json"}
    check({f["file"] for f in j["files"]} == expected and all(os.path.exists(os.path.join(out, f)) for f in expected),
          f"{name}: wrote {sorted(expected)}")
    return j


def check_sizes(cli, data, c, tmp):
    """Cameras of other sizes (the LIBERO resize and crop path): each picture has its camera's size."""
    rng = np.random.default_rng(0)
    paths, sizes = [], [(260, 200), (180, 240)]
    for i, (w, h) in enumerate(sizes):
        paths.append(os.path.join(tmp, f"camera{i}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    out = os.path.join(tmp, "sizes")
    r = run(cli, explain_args(data, c, out, paths) + ["--per-block", "--no-reliance"])
    check(r.returncode == 0, f"other sizes, --per-block: exits 0 ({r.stderr.strip()[-300:]})")
    if r.returncode != 0:
        return
    j = json.load(open(os.path.join(out, "explain.json")))
    blocks = j["blocks"]
    per_block = [f for f in j["files"] if "block" in f]
    check(len(per_block) == 2 * blocks * 2, f"--per-block: {len(per_block)} heat maps (2 maps x {blocks} blocks x 2 cameras)")
    check_pngs(out, j["files"], sizes, "other sizes")
    check(j["ablations"] == [] and j["verdict"]["level"] == "not-run", "--no-reliance: no ablations, verdict not-run")


def check_verdicts(cli, data, cases, tmp):
    for name, level in (("focus_gate_off", "none"), ("pro_gate_off", "none"), ("explain_focus", "uses-vision"),
                        ("explain_base", "uses-vision")):
        c = cases[name]
        out = os.path.join(tmp, name + "_table")
        r = run(cli, explain_args(data, c, out))
        j = json.load(open(os.path.join(out, "explain.json"))) if r.returncode == 0 else {}
        got = j.get("verdict", {}).get("level")
        check(got == level, f"{name}: verdict {got} (expected {level})")
        line = next((l for l in r.stdout.splitlines() if l.startswith("verdict")), "")
        check(j.get("verdict", {}).get("line", "?") in line and all(a in r.stdout for a in (
            "reliance", "gray_cameras", "visual_tokens_zeroed", "cameras_swapped", "head_visual_zeroed",
            "action_queries_zeroed")), f"{name}: the terminal shows the reliance table and the verdict: {line}")


def check_errors(cli, data, c, tmp):
    base = explain_args(data, c, os.path.join(tmp, "errors"))
    no_out = [a for i, a in enumerate(base) if a != "--out" and (i == 0 or base[i - 1] != "--out")]
    blocked = os.path.join(tmp, "a_file")
    open(blocked, "w").close()
    cases = [
        ("no --out", no_out, 2, ["--out"]),
        ("--gray 300", base + ["--gray", "300"], 2, ["--gray", "out of range"]),
        ("--num-images 3", base + ["--num-images", "3"], 1, ["--num-images 3", "2 --image"]),
        ("--proprio 1,x", base + ["--proprio", "1,x"], 1, ["--proprio", "'x'"]),
        ("--out under a file", explain_args(data, c, os.path.join(blocked, "sub")), 1, ["--out", "cannot create"]),
    ]
    for label, args, status, words in cases:
        r = run(cli, args)
        ok = r.returncode == status and all(w in r.stderr for w in words) and "internal error" not in r.stderr
        check(ok, f"explain {label}: exit {r.returncode}, {r.stderr.strip().splitlines()[:1]}")
    r = run(cli, ["explain", "--help"])
    check(r.returncode == 0 and "Usage" in r.stdout and "--out" in r.stdout, "focusvla explain --help")


def check_compare_quantize(cli, data, c, tmp):
    """explain --compare-quantize int8: explain.json carries the focus audit, one entry per head
    block with Jaccard overlaps in [0, 1] and gate changes >= 0, and the two action chunks whose
    distance it reports; the table names it; a bad value is a named error."""
    name = c["name"] + " --compare-quantize int8"
    out = os.path.join(tmp, "compare_quantize")
    r = run(cli, explain_args(data, c, out) + ["--no-reliance", "--compare-quantize", "int8"])
    check(r.returncode == 0, f"{name}: exits 0 ({r.stderr.strip()[-300:]})")
    if r.returncode != 0:
        return
    check("kept patches Jaccard" in r.stdout, f"{name}: the table has the audit line")
    j = json.load(open(os.path.join(out, "explain.json")))
    a = j.get("quantize_audit") or {}
    check(a.get("quantized_quantize") == "int8" and a.get("reference_quantize") == "none", f"{name}: what was compared")
    blocks = a.get("blocks", [])
    check(len(blocks) == j["blocks"], f"{name}: one audit entry per head block ({len(blocks)} vs {j['blocks']})")
    check(all(0.0 <= b["kept_jaccard_min"] <= b["kept_jaccard_mean"] <= 1.0 for b in blocks if b["kept_jaccard_mean"] is not None),
          f"{name}: Jaccard overlaps in [0, 1], min <= mean")
    check(all(b["gate_mean_abs_change"] is None or 0.0 <= b["gate_mean_abs_change"] <= b["gate_max_abs_change"]
              for b in blocks), f"{name}: gate changes >= 0, mean <= max")
    check(max_diff(a["reference_actions"], j["actions"]) == 0.0, f"{name}: the reference side is explain's own act")
    r = run(cli, explain_args(data, c, out) + ["--compare-quantize", "int4"])
    check(r.returncode != 0 and "--compare-quantize" in r.stderr, f"{name}: int4 is refused naming the option")


def main():
    cli, data = sys.argv[1], sys.argv[2]
    cases = {c["name"]: c for c in json.load(open(os.path.join(data, "explain_cases.json")))}
    tmp = tempfile.mkdtemp(prefix="focusvla_explain_")
    try:
        for name in ("explain_focus", "explain_pro"):
            check_against_oracle(cli, data, cases[name], tmp)
        check_sizes(cli, data, cases["explain_focus"], tmp)
        check_verdicts(cli, data, cases, tmp)
        check_errors(cli, data, cases["explain_focus"], tmp)
        check_compare_quantize(cli, data, cases["explain_focus"], tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
