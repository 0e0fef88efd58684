"""The Python reference of one `act`, built from the reference packages: timm encoders through
Prismatic's `get_intermediate_layers` path, the Prismatic image processor (Pillow bicubic +
torchvision normalize), HF tokenizer, transformers `Qwen2Model`, and the VLA-Adapter / FocusVLA
heads transcribed in reference_heads.py. It follows `PrismaticForConditionalGeneration.
predict_action` and `experiments/robot/openvla_utils.get_vla_action` (SPEC sections 1-10).

    ref = ReferencePolicy(checkpoint_dir, size="tiny", dtype=torch.float32)
    out = ref.act([img_u8, ...], "task", proprio, prompt_format="openvla", unnorm_key=...)
"""
import glob
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import make_checkpoint  # noqa: E402
import reference_heads  # noqa: E402
from gen_vision import featurize, prepare_image_for_vla, prismatic_processor  # noqa: E402

PROMPTS = {
    "openvla": "In: What action should the robot take to {task}?\nOut:",
    "qwen-chat": ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\nWhat action should the robot take to {task}?<|im_end|>\n<|im_start|>assistant\n"),
}
STOP_ID = 2


def load_model_state(directory):
    from safetensors.torch import load_file
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        state = {}
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            state.update(load_file(os.path.join(directory, shard)))
        return state
    return load_file(os.path.join(directory, "model.safetensors"))


def sub(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class ReferencePolicy:
    def __init__(self, directory, size, dtype=torch.float32):
        from transformers import AutoTokenizer, Qwen2Config, Qwen2Model
        self.dtype = dtype
        config = json.load(open(os.path.join(directory, "config.json")))
        self.preprocessor = json.load(open(os.path.join(directory, "preprocessor_config.json")))
        self.norm_stats = dict(config.get("norm_stats", {}))
        stats_file = os.path.join(directory, "dataset_statistics.json")
        if os.path.exists(stats_file):
            self.norm_stats.update(json.load(open(stats_file)))
        state = load_model_state(directory)

        self.dino, self.siglip = make_checkpoint.vision_encoders(size)
        for module, prefix in ((self.dino, "vision_backbone.featurizer."), (self.siglip, "vision_backbone.fused_featurizer.")):
            part = {k.replace(".scale_factor", ".gamma"): v for k, v in sub(state, prefix).items()}
            module.load_state_dict(part, strict=True)
        proj = sub(state, "projector.")
        self.projector = [(proj[f"fc{i}.weight"], proj[f"fc{i}.bias"]) for i in (1, 2, 3)]
        self.llm = Qwen2Model(Qwen2Config(**config["text_config"]))
        self.llm.load_state_dict(sub(state, "language_model.model."), strict=True)
        self.action_queries = state["action_queries.weight"]
        # The tokenizer files only: AutoTokenizer on the checkpoint directory would read its
        # config.json (model_type openvla, unknown to transformers).
        tok_dir = os.path.join(directory, ".tokenizer")
        os.makedirs(tok_dir, exist_ok=True)
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json"):
            if os.path.exists(os.path.join(directory, name)):
                shutil.copy(os.path.join(directory, name), tok_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir)

        head_state = reference_heads.strip_module_prefix(
            torch.load(glob.glob(os.path.join(directory, "action_head--*checkpoint.pt"))[0], weights_only=True))
        focus = config.get("focus")
        kind = "focus" if focus else ("pro" if any(".k_self." in k for k in head_state) else "base")
        blocks = len({k.split(".")[2] for k in head_state if k.startswith("model.mlp_resnet_blocks.")})
        hidden = head_state["model.fc1.weight"].shape[0]
        self.head = reference_heads.build_head(kind, hidden=hidden, blocks=blocks, focus=focus)
        missing, unexpected = self.head.load_state_dict(head_state, strict=False)
        assert not missing and all(".film_gen." in k for k in unexpected), (missing, unexpected)
        proprio_files = glob.glob(os.path.join(directory, "proprio_projector--*checkpoint.pt"))
        self.proprio_projector = None
        if proprio_files:
            p_state = reference_heads.strip_module_prefix(torch.load(proprio_files[0], weights_only=True))
            self.proprio_projector = reference_heads.ProprioProjector(hidden, p_state["fc1.weight"].shape[1])
            self.proprio_projector.load_state_dict(p_state)
        # The decoder's RoPE frequencies stay fp32, as the reference's get_vla leaves them
        # (from_pretrained(torch_dtype=torch.bfloat16) keeps non-persistent fp32 buffers); a plain
        # .to(bfloat16) would round them to bf16 and move cos / sin by up to an ulp (SPEC 7).
        inv_freq = self.llm.rotary_emb.inv_freq.clone()
        for m in (self.dino, self.siglip, self.llm, self.head) + ((self.proprio_projector,) if self.proprio_projector else ()):
            m.to(dtype).eval()
        self.llm.rotary_emb.inv_freq = inv_freq
        self.projector = [(w.to(dtype), b.to(dtype)) for w, b in self.projector]
        self.action_queries = self.action_queries.to(dtype)

    def to(self, device):
        """Moves every module and tensor to `device` (for benchmarks on a GPU)."""
        self.device = torch.device(device)
        for m in (self.dino, self.siglip, self.llm, self.head) + ((self.proprio_projector,) if self.proprio_projector else ()):
            m.to(self.device)
        self.projector = [(w.to(self.device), b.to(self.device)) for w, b in self.projector]
        self.action_queries = self.action_queries.to(self.device)
        return self

    def stats(self, unnorm_key):
        return self.norm_stats[unnorm_key]

    @torch.no_grad()
    def act(self, images, instruction, proprio, prompt_format, unnorm_key, lm_head=False, center_crop=False,
            zero=(), diagnostics=None, jpeg_roundtrip=True):
        """images: list of (H, W, 3) uint8; proprio: list of floats or None. Returns a dict with
        actions (8, 7) float64, normalized, fused features, hidden states. lm_head: also compute
        the logits over every position, as the released model's forward does (its Qwen2 LM head is
        the tied embedding); the policy does not use them (for benchmarks only). Images go through
        the LIBERO evaluation's prepare_images_for_vla: resize_image_for_policy run by TensorFlow
        (JPEG encode / decode, Lanczos-3 resize to 224) when the image is not 224x224, whatever
        center_crop says, then the 0.9 center crop when center_crop (cfg.center_crop);
        jpeg_roundtrip=False leaves the JPEG step out (focusvla's option).
        zero: ablations of `focusvla explain` (policy/explain.h), any of "visual_tokens" (the
        projector output, before it enters the sequence), "head_visual" (the head's visual states
        of every layer), "head_queries" (the head's action-query states). diagnostics: a dict the
        head fills (reference_heads.head_forward)."""
        device = getattr(self, "device", torch.device("cpu"))
        images = [prepare_image_for_vla(im, jpeg_roundtrip, crop=center_crop) for im in images]
        pixels = prismatic_processor(images, self.preprocessor).to(device, self.dtype)  # (N, 6, 224, 224)
        dino = featurize(self.dino, pixels[:, :3])
        sig = featurize(self.siglip, pixels[:, 3:])
        fused = torch.cat([dino, sig], dim=2).reshape(1, -1, dino.shape[2] + sig.shape[2])  # (1, N*256, 2176)
        x = fused
        for i, (w, b) in enumerate(self.projector):
            x = F.linear(x, w, b)
            if i < 2:
                x = F.gelu(x)
        visual = x                                                                   # (1, Nv, D)
        if "visual_tokens" in zero:
            visual = torch.zeros_like(visual)
        prompt = PROMPTS[prompt_format].format(task=instruction.lower())
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        embed = self.llm.embed_tokens
        text = embed(torch.tensor([ids], device=device))
        stop = embed(torch.tensor([[STOP_ID]], device=device))
        seq = torch.cat([text[:, :1], visual, text[:, 1:], self.action_queries[None], stop], dim=1)
        out = self.llm(inputs_embeds=seq, output_hidden_states=True)
        hidden = torch.stack(out.hidden_states)                                      # (25, 1, L, D)
        if lm_head:
            out.logits = F.linear(out.last_hidden_state, embed.weight)               # (1, L, vocab)
        nv, p = visual.shape[1], len(ids)
        q0 = nv + p
        vis_states = hidden[:, :, :nv].permute(1, 0, 2, 3)
        query_states = hidden[:, :, q0 - 1:q0 - 1 + self.action_queries.shape[0]].permute(1, 0, 2, 3)
        if "head_visual" in zero:
            vis_states = torch.zeros_like(vis_states)
        if "head_queries" in zero:
            query_states = torch.zeros_like(query_states)
        token = None
        stats = self.stats(unnorm_key)
        if self.proprio_projector is not None:
            s = stats["proprio"]
            low, high = np.array(s["q01"]), np.array(s["q99"])
            mask = np.array(s.get("mask", np.ones_like(low, dtype=bool)))
            x = np.array(proprio, dtype=np.float64)
            n = np.clip(np.where(mask, 2 * (x - low) / (high - low + 1e-8) - 1, x), -1.0, 1.0)
            token = self.proprio_projector(torch.tensor(n, dtype=torch.float32).to(device, self.dtype)[None])[:, None]
        normalized = reference_heads.head_forward(self.head, vis_states, query_states, token,
                                                  diagnostics=diagnostics)[0]
        a = stats["action"]
        low, high = np.array(a["q01"]), np.array(a["q99"])
        mask = np.array(a.get("mask", np.ones_like(low, dtype=bool)))
        n = normalized.float().cpu().numpy().astype(np.float64)
        actions = np.where(mask, 0.5 * (n + 1) * (high - low + 1e-8) + low, n)
        return {"actions": actions, "normalized": n, "fused": fused[0], "visual": visual[0], "hidden": hidden[:, 0]}
