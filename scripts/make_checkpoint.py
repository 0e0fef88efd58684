#!/usr/bin/env python3
"""Writes a checkpoint directory in the VLA-Adapter release layout (SPEC section 2) with random
weights, for tests, benchmarks and the demo. No trained weights exist offline.

Key names and shapes come from the reference implementations themselves: timm builds the two
vision encoders, transformers builds Qwen2, and the action head follows VLA-Adapter's
`L1RegressionActionHead` (Pro or original block; FocusVLA adds `gate` and `fusion`, SPEC 9.2).

    make_checkpoint.py OUT_DIR [--size full|tiny] [--dtype bf16|f32] [--shards N]
                       [--head pro|base|focus] [--head-init pool|torch] [--module-prefix] [--manifest FILE]

--head-init: "pool" (the default) draws every head tensor from N(0, 0.02), LayerNorm weights
included, which leaves an untrained head whose actions barely depend on its inputs (mostly its
biases); "torch" initialises the head as PyTorch's modules do (Linear U(+-1/sqrt(fan_in)),
LayerNorm 1 / 0) with tanh(g) gates drawn from N(0, 0.5), so that its actions respond to the
visual tokens and the action queries as a head in training does (`focusvla explain` tests).

--manifest writes the expected inspection (tensor and parameter counts, dtypes per component),
computed here from the modules, for tests to compare with `focusvla inspect --json`.
"""
import argparse
import copy
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.environ.get("FOCUSVLA_ASSETS", os.path.join(HERE, "..", "assets"))

# Sizes: "full" is the released architecture; "tiny" keeps every name and the structure with small
# widths so that a test builds and runs it in a second.
SIZES = {
    "full": dict(dino=dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
                 siglip=dict(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362),
                 llm=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
                 head_blocks=24, num_queries=64),
    # 16 heads like the real encoders: head counts do not show in tensor shapes, so a loader
    # sizing the encoders from the file keeps the real ones.
    "tiny": dict(dino=dict(embed_dim=64, depth=3, num_heads=16, mlp_ratio=4.0),
                 siglip=dict(embed_dim=96, depth=3, num_heads=16, mlp_ratio=3.7362),
                 llm=dict(hidden_size=112, intermediate_size=224, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=151936),
                 head_blocks=2, num_queries=64),
}
ACTION_DIM = 7
PROPRIO_DIM = 8
HEAD_HEADS = 8


def vision_encoders(size):
    """The two timm encoders as Prismatic builds them (num_classes=0, img_size=224)."""
    from timm.models.vision_transformer import VisionTransformer
    s = SIZES[size]
    # Same arguments as timm's vit_large_patch14_reg4_dinov2 and vit_so400m_patch14_siglip_224.
    dino = VisionTransformer(img_size=224, patch_size=14, num_classes=0, init_values=1e-5,
                             reg_tokens=4, no_embed_class=True, **s["dino"])
    siglip = VisionTransformer(img_size=224, patch_size=14, num_classes=0, class_token=False,
                               global_pool="map", **s["siglip"])
    return dino, siglip


def qwen2_config(size):
    from transformers import Qwen2Config
    with open(os.path.join(ASSETS, "vla-adapter-reference", "config.json")) as f:
        text = json.load(f)["text_config"]
    text = dict(text, **SIZES[size]["llm"])
    return text, Qwen2Config(**text)


def vision_state(size):
    dino, siglip = vision_encoders(size)
    out = {}
    for prefix, module in (("vision_backbone.featurizer.", dino), ("vision_backbone.fused_featurizer.", siglip)):
        for name, t in module.state_dict().items():
            # Prismatic renames timm's LayerScale `gamma` (HF mangles names containing "gamma").
            name = name.replace(".gamma", ".scale_factor")
            out[prefix + name] = tuple(t.shape)
    return out


def model_shapes(size):
    """name -> shape of every tensor in model.safetensors."""
    from transformers import Qwen2Model
    s = SIZES[size]
    shapes = vision_state(size)
    d_vis = s["dino"]["embed_dim"] + s["siglip"]["embed_dim"]
    d = s["llm"]["hidden_size"]
    shapes.update({"projector.fc1.weight": (4 * d_vis, d_vis), "projector.fc1.bias": (4 * d_vis,),
                   "projector.fc2.weight": (d, 4 * d_vis), "projector.fc2.bias": (d,),
                   "projector.fc3.weight": (d, d), "projector.fc3.bias": (d,)})
    _, config = qwen2_config(size)
    with torch.device("meta"):
        llm = Qwen2Model(config)
    for name, t in llm.state_dict().items():
        shapes["language_model.model." + name] = tuple(t.shape)
    shapes["action_queries.weight"] = (s["num_queries"], d)
    return shapes


def linear(prefix, n_in, n_out):
    return {prefix + ".weight": (n_out, n_in), prefix + ".bias": (n_out,)}


def head_shapes(size, kind):
    """name -> shape of the action head state dict (keys as torch.save writes them)."""
    s = SIZES[size]
    d = s["llm"]["hidden_size"]
    out = {"model.layer_norm1.weight": (ACTION_DIM * d,), "model.layer_norm1.bias": (ACTION_DIM * d,)}
    out.update(linear("model.fc1", ACTION_DIM * d, d))
    for i in range(s["head_blocks"]):
        b = f"model.mlp_resnet_blocks.{i}."
        out.update({b + "ffn.0.weight": (d,), b + "ffn.0.bias": (d,)})
        out.update(linear(b + "ffn.1", d, d))
        out[b + "gating_factor"] = (1,)
        if kind == "base":
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out.update(linear(b + p, d, d))
            continue
        for p in ("q_proj", "k_self", "v_self", "k_adapter", "v_adapter", "k_task", "v_task", "o_proj"):
            out.update(linear(b + p, d, d))
        out.update(linear(b + "film_gen.0", d, 2 * d))
        if kind == "focus":
            out.update(linear(b + "gate.0", d, d))
            out.update(linear(b + "gate.2", d, d))
            out.update(linear(b + "fusion", 3 * d, d))
    out.update({"model.layer_norm2.weight": (d,), "model.layer_norm2.bias": (d,)})
    out.update(linear("model.fc2", d, ACTION_DIM))
    return out


def proprio_shapes(size):
    d = SIZES[size]["llm"]["hidden_size"]
    return {**linear("fc1", PROPRIO_DIM, d), **linear("fc2", d, d)}


def torch_init(name, shape, gen, dtype):
    """A head tensor as PyTorch initialises its module: nn.Linear weight and bias
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)), nn.LayerNorm weight 1 and
    bias 0; gating_factor (zeros in VLA-Adapter, i.e. tanh(g) = 0) from N(0, 0.5) instead, so that
    the visual logits are not all zero."""
    if name.endswith("gating_factor"):
        return (torch.randn(shape, generator=gen) * 0.5).to(dtype)
    layer_norm = ".layer_norm" in name or name.endswith(("ffn.0.weight", "ffn.0.bias"))
    if layer_norm:
        return (torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)).to(dtype)
    return None


class RandomPool:
    """Random values for a billion parameters in seconds: fresh normals for small tensors, slices
    of a large normal pool (at random offsets) for big ones."""

    def __init__(self, seed, dtype):
        self.gen = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.pool = (torch.randn(1 << 24, generator=self.gen) * 0.02).to(dtype)

    def __call__(self, shape):
        n = 1
        for x in shape:
            n *= x
        if n <= (1 << 16):
            return (torch.randn(shape, generator=self.gen) * 0.02).to(self.dtype)
        out = torch.empty(n, dtype=self.dtype)
        pos = 0
        while pos < n:
            start = int(torch.randint(0, self.pool.numel() // 2, (1,), generator=self.gen))
            take = min(n - pos, self.pool.numel() - start)
            out[pos:pos + take] = self.pool[start:start + take]
            pos += take
        return out.view(shape)


def component_of(name):
    for prefix, label in (("vision_backbone.featurizer.", "vision: DINOv2 (featurizer)"),
                          ("vision_backbone.fused_featurizer.", "vision: SigLIP (fused_featurizer)"),
                          ("projector.", "projector"), ("language_model.", "language model"),
                          ("action_queries.", "action queries")):
        if name.startswith(prefix):
            return label
    return "other model tensors"


def write_model(out_dir, shapes, make, shards):
    from safetensors.torch import save_file
    names = sorted(shapes)
    if shards <= 1:
        save_file({n: make(shapes[n]) for n in names}, os.path.join(out_dir, "model.safetensors"),
                  metadata={"format": "pt"})
        return
    per = (len(names) + shards - 1) // shards
    weight_map, total = {}, 0
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: make(shapes[n]) for n in names[k * per:(k + 1) * per]}
        total += sum(t.numel() * t.element_size() for t in part.values())
        save_file(part, os.path.join(out_dir, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_directory(out_dir, size="tiny", dtype="bf16", shards=1, head="pro", module_prefix=False, seed=0,
                    num_images=2, proprio=True, head_init="pool"):
    os.makedirs(out_dir, exist_ok=True)
    torch_dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype]
    make = RandomPool(seed, torch_dtype)
    ref = os.path.join(ASSETS, "vla-adapter-reference")
    with open(os.path.join(ref, "config.json")) as f:
        config = json.load(f)
    text, _ = qwen2_config(size)
    config["text_config"] = text
    config["num_images_in_input"] = num_images
    if head == "focus":
        config["focus"] = {"attention": "cascaded", "top_k": 256, "gate": "element", "value_source": "embeddings"}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shutil.copy(os.path.join(ref, "preprocessor_config.json"), out_dir)
    tok = os.path.join(ASSETS, "qwen2.5-tokenizer")
    for name in sorted(os.listdir(tok)):
        shutil.copy(os.path.join(tok, name), out_dir)
    # dataset_statistics.json as finetuning writes it: one LIBERO-like entry with proprio stats.
    stats = copy.deepcopy(config["norm_stats"]["bridge_orig"])
    stats["proprio"] = {k: [0.0] * PROPRIO_DIM for k in ("mean", "std", "min", "max", "q01", "q99")}
    stats["proprio"]["q01"] = [-0.5 - 0.1 * i for i in range(PROPRIO_DIM)]
    stats["proprio"]["q99"] = [0.7 + 0.2 * i for i in range(PROPRIO_DIM)]
    with open(os.path.join(out_dir, "dataset_statistics.json"), "w") as f:
        json.dump({"libero_spatial_no_noops": stats}, f, indent=2)

    shapes = model_shapes(size)
    write_model(out_dir, shapes, make, shards)
    heads = head_shapes(size, head)
    assert head_init in ("pool", "torch"), head_init
    head_gen = torch.Generator().manual_seed(seed + 1000)

    def make_head(name, shape):
        fixed = torch_init(name, shape, head_gen, torch_dtype)
        if fixed is not None:
            return fixed
        fan_in = heads[name[:-len("bias")] + "weight"][1] if name.endswith("bias") else shape[1]
        bound = 1.0 / fan_in ** 0.5
        return ((torch.rand(shape, generator=head_gen) * 2 - 1) * bound).to(torch_dtype)

    prefix = "module." if module_prefix else ""
    torch.save({prefix + n: make_head(n, s) for n, s in heads.items()} if head_init == "torch" else
               {prefix + n: make(s) for n, s in heads.items()},
               os.path.join(out_dir, "action_head--150000_checkpoint.pt"))
    proprio_state = proprio_shapes(size) if proprio else {}
    if proprio:
        torch.save({prefix + n: make(s) for n, s in proprio_state.items()},
                   os.path.join(out_dir, "proprio_projector--150000_checkpoint.pt"))
    return manifest(shapes, heads, proprio_state, dtype)


def manifest(shapes, heads, proprio, dtype):
    """The expected `focusvla inspect --json` components."""
    name = {"bf16": "BF16", "f32": "F32"}[dtype]
    comps = {}
    def add(label, shape):
        c = comps.setdefault(label, {"tensors": 0, "parameters": 0})
        c["tensors"] += 1
        n = 1
        for x in shape:
            n *= x
        c["parameters"] += n
    for n, s in shapes.items():
        add(component_of(n), s)
    for s in heads.values():
        add("action head", s)
    comps.setdefault("proprio projector", {"tensors": 0, "parameters": 0})
    for s in proprio.values():
        add("proprio projector", s)
    for c in comps.values():
        c["dtypes"] = {name: c["tensors"]} if c["tensors"] else {}
    return {"components": comps,
            "total": {"tensors": sum(c["tensors"] for c in comps.values()),
                      "parameters": sum(c["parameters"] for c in comps.values())}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--head", choices=["pro", "base", "focus"], default="pro")
    ap.add_argument("--head-init", choices=["pool", "torch"], default="pool",
                    help="head weights: N(0, 0.02) throughout, or PyTorch's module initialisation")
    ap.add_argument("--module-prefix", action="store_true", help="prefix .pt keys with 'module.' as DDP does")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--manifest", help="write the expected inspection here")
    args = ap.parse_args()
    expected = write_directory(args.out_dir, args.size, args.dtype, args.shards, args.head,
                               args.module_prefix, args.seed, head_init=args.head_init)
    if args.manifest:
        with open(args.manifest, "w") as f:
            json.dump(expected, f, indent=2)
    print(f"wrote {args.out_dir}: {expected['total']['tensors']} tensors, "
          f"{expected['total']['parameters']:,} parameters ({args.size}, {args.dtype}, head {args.head})")


if __name__ == "__main__":
    sys.exit(main())
