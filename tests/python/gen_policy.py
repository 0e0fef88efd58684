#!/usr/bin/env python3
"""Oracle data for Policy::act / act_batch: checkpoint directories in the release layout (random
weights) and the actions the Python reference pipeline (reference_policy.py: timm +
transformers + HF tokenizer + the transcribed heads) computes for them.

    gen_policy.py OUT_DIR [--full]

Writes OUT_DIR/<checkpoint>/ and OUT_DIR/cases.json; inputs (camera images as uint8) and expected
outputs go into OUT_DIR/tensors.safetensors. --full adds a full-size FocusVLA case.
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import make_checkpoint  # noqa: E402
from reference_policy import ReferencePolicy  # noqa: E402
import explain_oracle  # noqa: E402
import gen_vision  # noqa: E402
from gen_vision import smooth_image as smooth_frame  # noqa: E402

ASSETS = os.environ.get("FOCUSVLA_ASSETS", os.path.join(HERE, "..", "..", "assets"))
UNNORM = "libero_spatial_no_noops"


def libero():
    sample = os.path.join(ASSETS, "libero-sample")
    obs = json.load(open(os.path.join(sample, "observation.json")))
    images = [np.asarray(Image.open(os.path.join(sample, obs["images"][k])).convert("RGB")) for k in ("agentview", "wrist")]
    return images, obs["task_description"], obs["state"]


def upscale(img, size):
    """A LIBERO-like size-by-size frame from the 224x224 sample (Pillow bicubic)."""
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))


def tensorflow_available():
    try:
        gen_vision.tensorflow()
        return True
    except ImportError:
        return False


def reference_taps(ref, observation):
    """{"taps.<name>": tensor} for Policy::set_tap names: "vision.features", "vision.output",
    "llm.layers.<i>" (decoder layer i's output), "llm.norm", "head.blocks.<i>" (block i's output),
    captured with forward hooks while the reference computes one act (batch 1, leading dim dropped)."""
    import reference_heads
    captured, handles = {}, []

    def hook(name):
        def record(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[name] = out.detach()[0].float().contiguous().clone()
        return record

    for i, layer in enumerate(ref.llm.layers):
        handles.append(layer.register_forward_hook(hook(f"llm.layers.{i}")))
    handles.append(ref.llm.norm.register_forward_hook(hook("llm.norm")))
    for i, block in enumerate(ref.head.model.mlp_resnet_blocks):
        handles.append(block.register_forward_hook(hook(f"head.blocks.{i}")))
    images, instruction, state = observation
    r = ref.act(images, instruction, state, "openvla", UNNORM)
    for h in handles:
        h.remove()
    captured["vision.features"] = r["fused"].float().contiguous()
    captured["vision.output"] = r["visual"].float().contiguous()
    return {"taps." + k: v for k, v in captured.items()}


def main():
    out = sys.argv[1]
    full = "--full" in sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, task, state = libero()
    # Other observations for batches: random images of other sizes, other tasks and states.
    extra = [[rng.integers(0, 256, (200 + 13 * i, 260 - 7 * i, 3), dtype=np.uint8) for _ in range(2)] for i in range(3)]
    tasks = [task, "Put the BOWL on the stove", "open the top drawer and put the bowl inside", "pick up the ketchup"]
    states = [state] + [list(rng.normal(0, 0.5, 8)) for _ in range(3)]

    tensors, cases = {}, []

    def add_case(name, ckpt, ref, observations, prompt_format, dtype_name, proprio, center_crop=False, defaults=False,
                 jpeg_roundtrip=True):
        """defaults: the case is the reference's LIBERO evaluation (qwen-chat, center crop) that
        focusvla must reproduce with its default options. jpeg_roundtrip=False: the LIBERO resize
        of non-224 cameras without its JPEG round trip (focusvla's option)."""
        expected = []
        for j, (imgs, instruction, st) in enumerate(observations):
            r = ref.act(imgs, instruction, st if proprio else None, prompt_format, UNNORM, center_crop=center_crop,
                        jpeg_roundtrip=jpeg_roundtrip)
            key = f"{name}.{j}"
            tensors[key + ".actions"] = torch.tensor(r["actions"], dtype=torch.float64)
            tensors[key + ".fused"] = r["fused"].float().contiguous()
            for c, img in enumerate(imgs):
                tensors[key + f".image{c}"] = torch.from_numpy(np.array(img, copy=True))
            expected.append({"key": key, "instruction": instruction, "proprio": list(map(float, st)) if proprio else [],
                             "cameras": len(imgs)})
        cases.append({"name": name, "checkpoint": ckpt, "prompt_format": prompt_format, "dtype": dtype_name,
                      "center_crop": center_crop, "jpeg_roundtrip": jpeg_roundtrip, "defaults": defaults,
                      "unnorm_key": UNNORM,
                      "observations": expected})

    # FocusVLA head, 2 cameras, proprio; fp32 weights.
    make_checkpoint.write_directory(os.path.join(out, "focus_f32"), size="tiny", dtype="f32", head="focus", seed=1)
    ref = ReferencePolicy(os.path.join(out, "focus_f32"), "tiny", torch.float32)
    obs2 = [(images, task, state)] + [(extra[i], tasks[i + 1], states[i + 1]) for i in range(3)]
    add_case("focus_openvla", "focus_f32", ref, obs2, "openvla", "float32", True)
    add_case("focus_qwen_chat", "focus_f32", ref, obs2[:1], "qwen-chat", "float32", True)

    # Named intermediates of one act (fp32), for the layer-by-layer diff through Policy::set_tap:
    # forward hooks on the reference modules of the same names.
    tensors.update(reference_taps(ref, obs2[0]))

    # The reference's LIBERO evaluation (get_vla_action with run_libero_eval.py's defaults:
    # use_minivlm -> the Qwen chat prompt, center_crop=True) on 224x224 cameras, as the LIBERO
    # environment renders them: what focusvla's defaults must reproduce.
    libero_obs = [(images, task, state),
                  ([rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)], tasks[1], states[1])]
    add_case("focus_libero_eval", "focus_f32", ref, libero_obs, "qwen-chat", "float32", True, center_crop=True,
             defaults=True)
    # LIBERO renders 256x256 (the sample above was saved at 224): such frames go through the
    # reference's resize_image_for_policy, TensorFlow's JPEG encode / decode and Lanczos-3 resize,
    # before the crop. TensorFlow itself computes them (tensorflow-cpu in .venv); a Python without
    # it (a device machine's) leaves these cases out and the tests that need them skip.
    if tensorflow_available():
        frames_256 = [([upscale(im, 256) for im in images], task, state),
                      ([smooth_frame(256, 256, rng), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)],
                       tasks[2], states[2]),
                      ([upscale(images[0], 256), images[1]], tasks[3], states[3])]  # one 256, one 224 camera
        add_case("focus_libero_eval_256", "focus_f32", ref, frames_256, "qwen-chat", "float32", True,
                 center_crop=True, defaults=True)
        add_case("focus_libero_256_no_jpeg", "focus_f32", ref, frames_256, "qwen-chat", "float32", True,
                 center_crop=True, jpeg_roundtrip=False)
    else:
        print("gen_policy: tensorflow is not importable: no 256x256 LIBERO cases (focus_libero_eval_256)")
    make_checkpoint.write_directory(os.path.join(out, "pro_f32"), size="tiny", dtype="f32", head="pro", seed=6)
    ref = ReferencePolicy(os.path.join(out, "pro_f32"), "tiny", torch.float32)
    add_case("pro_libero_eval", "pro_f32", ref, libero_obs, "qwen-chat", "float32", True, center_crop=True,
             defaults=True)

    # VLA-Adapter-Pro head, 1 camera, no proprio projector.
    make_checkpoint.write_directory(os.path.join(out, "pro_f32_1cam"), size="tiny", dtype="f32", head="pro", seed=2,
                                    num_images=1, proprio=False)
    ref = ReferencePolicy(os.path.join(out, "pro_f32_1cam"), "tiny", torch.float32)
    obs1 = [([images[0]], task, state)] + [([extra[i][0]], tasks[i + 1], states[i + 1]) for i in range(3)]
    add_case("pro_1cam_noproprio", "pro_f32_1cam", ref, obs1, "openvla", "float32", False)
    add_case("pro_1cam_qwen_chat", "pro_f32_1cam", ref, obs1[:1], "qwen-chat", "float32", False)

    # Original VLA-Adapter head, 2 cameras, proprio.
    make_checkpoint.write_directory(os.path.join(out, "base_f32"), size="tiny", dtype="f32", head="base", seed=3)
    ref = ReferencePolicy(os.path.join(out, "base_f32"), "tiny", torch.float32)
    add_case("base_openvla", "base_f32", ref, obs2[:2], "openvla", "float32", True)

    # bf16 weights, bf16 compute on both sides.
    make_checkpoint.write_directory(os.path.join(out, "focus_bf16"), size="tiny", dtype="bf16", head="focus", seed=4)
    ref = ReferencePolicy(os.path.join(out, "focus_bf16"), "tiny", torch.bfloat16)
    add_case("focus_bf16", "focus_bf16", ref, obs2[:1], "openvla", "bfloat16", True)
    # The same bf16 weights computed in fp32: how far the reference's own bf16 lands from fp32.
    ref = ReferencePolicy(os.path.join(out, "focus_bf16"), "tiny", torch.float32)
    add_case("focus_bf16_as_f32", "focus_bf16", ref, obs2[:1], "openvla", "float32", True)
    # The same for the Pro head (bit-identical to the reference's bf16 with LibTorch's kernels).
    make_checkpoint.write_directory(os.path.join(out, "pro_bf16"), size="tiny", dtype="bf16", head="pro", seed=7)
    ref = ReferencePolicy(os.path.join(out, "pro_bf16"), "tiny", torch.bfloat16)
    add_case("pro_bf16", "pro_bf16", ref, obs2[:1], "openvla", "bfloat16", True)
    ref = ReferencePolicy(os.path.join(out, "pro_bf16"), "tiny", torch.float32)
    add_case("pro_bf16_as_f32", "pro_bf16", ref, obs2[:1], "openvla", "float32", True)

    # `focusvla explain` (policy/explain.h): patch maps, attention masses, gates and the reliance
    # test of the LIBERO sample through the reference, and checkpoints with the visual branch off.
    explain_oracle.write_cases(out, images, task, state, "focus_libero_eval.0")

    if full:
        make_checkpoint.write_directory(os.path.join(out, "full_focus"), size="full", dtype="bf16", head="focus", seed=5)
        ref = ReferencePolicy(os.path.join(out, "full_focus"), "full", torch.float32)
        add_case("full_focus_f32", "full_focus", ref, obs2[:1], "openvla", "float32", True)
        del ref
        # The reference's own bf16 at full size: how far bf16 may land from fp32 there.
        ref = ReferencePolicy(os.path.join(out, "full_focus"), "full", torch.bfloat16)
        add_case("full_focus_bf16", "full_focus", ref, obs2[:1], "openvla", "bfloat16", True)
        del ref

    save_file(tensors, os.path.join(out, "tensors.safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"policy test data: {len(cases)} cases in {out}")


if __name__ == "__main__":
    main()
