"""Oracle data of `focusvla explain` (include/focusvla/policy/explain.h), computed with the Python
reference pipeline (reference_policy.py) and the transcribed heads' own softmax weights, kept
indices and gates (reference_heads.py diagnostics). gen_policy.py calls write_cases.

For each case: the normal actions; per block the kept-index histograms (FocusVLA top-K), the mean
softmax weight of every column (one softmax over all sources: VLA-Adapter, Pro) or of the visual
branch (FocusVLA cascaded), the gate statistics and tanh(g); the patch maps averaged over blocks,
on the head's visual positions and on each camera's grid (the position -> patch mapping written
here independently: position j >= 1 is token j - 1); and the actions of every ablation through the
reference with the same change (gray cameras, visual tokens zeroed after the projector, cameras
swapped, the head's visual / action-query states zeroed), with their distances.

Two checkpoints with the visual branch switched off: `focus_gate_off` (the element gate forced to
0: gate.2 weight 0, bias -1000, so sigmoid is exactly 0 in fp32) and `pro_gate_off` (tanh(g) = 0
and v_task zeroed: with one softmax, tanh(g) = 0 alone only makes the visual attention uniform,
the values still flow), and `pro_gate_zero` (tanh(g) = 0 alone).
"""
import glob
import json
import math
import os
import shutil

import numpy as np
import torch

import make_checkpoint
from reference_policy import ReferencePolicy

UNNORM = "libero_spatial_no_noops"
GRAY = 128


def head_file(directory):
    return glob.glob(os.path.join(directory, "action_head--*checkpoint.pt"))[0]


def switched_off_copy(src, dst, change):
    """A copy of checkpoint directory `src` whose head state dict `change` edits in place."""
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".tokenizer"))
    path = head_file(dst)
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def element_gate_off(state):
    for k in list(state):
        if k.endswith(".gate.2.weight"):
            state[k] = torch.zeros_like(state[k])
        elif k.endswith(".gate.2.bias"):
            state[k] = torch.full_like(state[k], -1000.0)


def scalar_gate_zero(state):
    for k in list(state):
        if k.endswith(".gating_factor"):
            state[k] = torch.zeros_like(state[k])


def scalar_gate_and_values_off(state):
    scalar_gate_zero(state)
    for k in list(state):
        if ".v_task." in k:
            state[k] = torch.zeros_like(state[k])


def positions_to_grids(positions, cameras):
    """(Nv,) values of the head's visual positions -> (cameras, side, side): position j >= 1 is
    visual token j - 1; the last token of the last camera has no position (0)."""
    tokens = np.append(np.asarray(positions, dtype=np.float64)[1:], 0.0)
    side = int(round(math.sqrt(len(tokens) // cameras)))
    return tokens.reshape(cameras, side, side)


def distances(ablated, normal):
    d = np.abs(np.asarray(ablated) - np.asarray(normal)) / 2
    return float(d.mean()), float(d.max())


def explain_case(name, ref, images, task, state, prompt_format, center_crop):
    diag = {}
    act = lambda imgs, zero=(), diagnostics=None: ref.act(imgs, task, state, prompt_format, UNNORM,
                                                          center_crop=center_crop, zero=zero, diagnostics=diagnostics)
    normal = act(images, diagnostics=diag)
    nv = normal["visual"].shape[0]
    cameras = len(images)
    blocks = []
    kept_maps, attention_maps = [], []
    for i in range(len(ref.head.model.mlp_resnet_blocks)):
        b = {}
        if "kept_indices" in diag:
            kept = diag["kept_indices"][i][0].numpy()                      # (H, T, K)
            rows = kept.shape[0] * kept.shape[1]
            share = np.bincount(kept.reshape(-1), minlength=nv) / rows
            b["kept_share"] = share.tolist()
            kept_maps.append(share)
        if "attention" in diag:
            w = diag["attention"][i][0].double().numpy()                  # (H, T, C)
            mean = w.reshape(-1, w.shape[-1]).mean(0)
            b["attention_columns"] = mean.tolist()
            attention_maps.append(mean[-nv:])
        if "visual_attention" in diag:
            w = diag["visual_attention"][i][0].double().numpy()
            mean = w.reshape(-1, w.shape[-1]).mean(0)
            attention_maps.append(mean)
        block = ref.head.model.mlp_resnet_blocks[i]
        if "gates" in diag and diag["gates"][i].numel() > 1:
            g = diag["gates"][i].double().numpy()
            b["gate"] = {"mean": float(g.mean()), "below_0_1": float((g < 0.1).mean()),
                         "above_0_9": float((g > 0.9).mean()), "values": int(g.size)}
        elif hasattr(block, "gating_factor") and (not hasattr(block, "focus") or block.focus["gate"] == "scalar"):
            b["scalar_gate"] = float(torch.tanh(block.gating_factor.double()).item())
        blocks.append(b)

    case = {"name": name, "prompt_format": prompt_format, "center_crop": center_crop, "cameras": cameras,
            "instruction": task, "proprio": list(map(float, state)), "visual_positions": nv,
            "normalized": normal["normalized"].tolist(), "actions": normal["actions"].tolist(), "blocks": blocks}
    for kind, maps in (("kept", kept_maps), ("attention", attention_maps)):
        if maps:
            positions = np.mean(maps, axis=0)
            case[kind] = {"positions": positions.tolist(), "grids": positions_to_grids(positions, cameras).tolist()}

    gray = [np.full_like(im, GRAY) for im in images]
    runs = [("gray_cameras", gray, ()), ("visual_tokens_zeroed", images, ("visual_tokens",))]
    if cameras > 1:
        runs.append(("cameras_swapped", images[::-1], ()))
    runs += [("head_visual_zeroed", images, ("head_visual",)), ("action_queries_zeroed", images, ("head_queries",))]
    case["ablations"] = []
    for ablation, imgs, zero in runs:
        r = act(imgs, zero)
        mean, worst = distances(r["normalized"], normal["normalized"])
        case["ablations"].append({"name": ablation, "actions": r["actions"].tolist(),
                                  "normalized": r["normalized"].tolist(), "mean_distance": mean, "max_distance": worst})
    return case


def write_cases(out, images, task, state, images_key):
    """explain_cases.json in `out` (the policy group's data directory): the LIBERO sample through
    the reference's evaluation settings (Qwen chat prompt, center crop) on tiny fp32 checkpoints
    whose heads are initialised as PyTorch initialises the modules (make_checkpoint --head-init
    torch: the N(0, 0.02) heads of the other cases barely respond to any input), and their
    copies with the visual branch switched off. images_key: the prefix of the same images in
    tensors.safetensors (<key>.image0, ...)."""
    for head, seed in (("focus", 11), ("pro", 12), ("base", 13)):
        make_checkpoint.write_directory(os.path.join(out, f"explain_{head}"), size="tiny", dtype="f32", head=head,
                                        seed=seed, head_init="torch")
    switched_off_copy(os.path.join(out, "explain_focus"), os.path.join(out, "focus_gate_off"), element_gate_off)
    switched_off_copy(os.path.join(out, "explain_pro"), os.path.join(out, "pro_gate_off"), scalar_gate_and_values_off)
    switched_off_copy(os.path.join(out, "explain_pro"), os.path.join(out, "pro_gate_zero"), scalar_gate_zero)
    cases = []
    for checkpoint in ("explain_focus", "explain_pro", "explain_base", "focus_gate_off", "pro_gate_off",
                       "pro_gate_zero"):
        ref = ReferencePolicy(os.path.join(out, checkpoint), "tiny", torch.float32)
        case = explain_case(checkpoint, ref, images, task, state, "qwen-chat", True)
        case["checkpoint"] = checkpoint
        case["images"] = images_key  # where tensors.safetensors holds the same camera images
        case["unnorm_key"] = UNNORM
        cases.append(case)
    with open(os.path.join(out, "explain_cases.json"), "w") as f:
        json.dump(cases, f)
    return cases
