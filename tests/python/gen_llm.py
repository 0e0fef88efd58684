#!/usr/bin/env python3
"""Oracle for the llm module: hidden states of HF transformers `Qwen2Model` (SPEC section 7).

Usage: python gen_llm.py OUT_DIR

For each decoder shape below, builds transformers' Qwen2Model with random weights, and writes
under OUT_DIR/<name>/:
  config.json         the Qwen2 config as a checkpoint's `text_config` spells it (rope_theta at
                      the top level). Its vocab_size may differ from the embedding table's row
                      count on purpose: the table size must come from the weights.
  model.safetensors   the weights under `language_model.model.*` (f32, or bf16 for "full")
  cases.safetensors   per sequence length L:
                        embeds_L{L}       (1, L, D) f32 inputs_embeds
                        hidden_L{L}       (n+1, 1, L, D) f32 hidden states, fp32 model (eager)
                        embeds_bf16_L{L}  the same inputs rounded to bf16
                        hidden_bf16_L{L}  hidden states of the bf16 model (sdpa attention)
                      for shapes with a batch case:
                        batch_embeds (3, Lmax, D), batch_lengths (3,) i64: a right-padded batch
                        (padding filled with random values), batch_hidden_{b} (n+1, 1, len_b, D)
                        each sample alone through the fp32 model
                      embed_ids (2, 5) i64 and embed_out (2, 5, D): embed_tokens(ids)

hidden states = transformers' `output_hidden_states=True` tuple: h[0] = inputs_embeds, h[l] =
output of layer l-1, h[n] = final norm of the last layer's output (checked here against a hook on
the last layer). Weights are scaled so that activations stay in a realistic range and attention
is not uniform: q/k weights std sqrt(2/D) (logits of std ~2), other matrices std 0.02, biases std
0.1 (q, k) / 0.02 (v), RMSNorm weights 1 + 0.1 N(0,1), embedding table N(0,1).
Everything is deterministic (seeded).
"""

import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen2Model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_quantize  # noqa: E402

SEED = 20240612
PREFIX = "language_model.model."

# name, config fields, embedding rows stored (vocab_size in config.json may differ), lengths,
# batch lengths (right-padded batch case) or None, weights dtype in model.safetensors.
SHAPES = [
    ("gqa", dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, rope_theta=1e6, rms_norm_eps=1e-6,
                 vocab_size=90),
     97, [1, 7, 61], [61, 7, 30], torch.float32),
    ("mha", dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
                 num_key_value_heads=6, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                 vocab_size=50),
     50, [1, 7, 61], [5, 16, 9], torch.float32),
    ("mqa", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, max_position_embeddings=256, rope_theta=1e6, rms_norm_eps=1e-6,
                 vocab_size=40),
     40, [7, 200], None, torch.float32),
    # The released Qwen2.5-0.5B decoder (SPEC 7; numbers from the reference text_config). The
    # embedding table is cut to 1024 rows (it is not exercised through ids here), the weights are
    # bf16 as in released checkpoints (so the fp32 oracle runs on bf16-representable weights).
    ("full", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                  vocab_size=151936),
     1024, [61], [61, 19, 40], torch.bfloat16),
]


def hf_config(fields, rows, attn):
    cfg = Qwen2Config(**dict(fields, vocab_size=rows), hidden_act="silu", tie_word_embeddings=True,
                      use_sliding_window=False, attn_implementation=attn)
    theta = cfg.rope_parameters["rope_theta"] if hasattr(cfg, "rope_parameters") else cfg.rope_theta
    assert theta == fields["rope_theta"], (theta, fields["rope_theta"])
    return cfg


def random_state(model, gen, dim):
    state = {}
    for name, t in model.state_dict().items():
        if name.endswith("norm.weight"):
            v = 1 + 0.1 * torch.randn(t.shape, generator=gen)
        elif name == "embed_tokens.weight":
            v = torch.randn(t.shape, generator=gen)
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            v = math.sqrt(2.0 / dim) * torch.randn(t.shape, generator=gen)
        elif name.endswith(("q_proj.bias", "k_proj.bias")):
            v = 0.1 * torch.randn(t.shape, generator=gen)
        else:
            v = 0.02 * torch.randn(t.shape, generator=gen)
        state[name] = v
    return state


def hidden_states(model, embeds):
    """All n+1 hidden states stacked (n+1, B, L, D), checked against SPEC 7."""
    raw = {}
    handle = model.layers[-1].register_forward_hook(
        lambda mod, args, out: raw.__setitem__("last", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        out = model(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
    handle.remove()
    hs = out.hidden_states
    assert len(hs) == model.config.num_hidden_layers + 1, len(hs)
    assert torch.equal(hs[0], embeds)
    assert torch.equal(hs[-1], out.last_hidden_state)
    with torch.no_grad():
        assert torch.equal(hs[-1], model.norm(raw["last"])), "hidden_states[-1] is not the final norm"
    return torch.stack([h.float() for h in hs])


def generate(out_dir, name, fields, rows, lengths, batch_lengths, weight_dtype, gen):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    dim = fields["hidden_size"]

    model = Qwen2Model(hf_config(fields, rows, "eager")).eval()
    state = random_state(model, gen, dim)
    state = {k: v.to(weight_dtype) for k, v in state.items()}
    save_file({PREFIX + k: v.contiguous() for k, v in state.items()}, os.path.join(d, "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()})

    text_config = dict(fields, model_type="qwen2", hidden_act="silu", tie_word_embeddings=True,
                       use_sliding_window=False, torch_dtype="bfloat16")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(text_config, f, indent=2)

    cases = {}
    for L in lengths:
        embeds = torch.randn(1, L, dim, generator=gen)
        cases[f"embeds_L{L}"] = embeds
        cases[f"hidden_L{L}"] = hidden_states(model, embeds)
    if batch_lengths is not None:
        lmax = max(batch_lengths)
        batch = torch.randn(len(batch_lengths), lmax, dim, generator=gen)
        cases["batch_embeds"] = batch
        cases["batch_lengths"] = torch.tensor(batch_lengths, dtype=torch.int64)
        for b, n in enumerate(batch_lengths):
            cases[f"batch_hidden_{b}"] = hidden_states(model, batch[b:b + 1, :n].clone())
    ids = torch.randint(0, rows, (2, 5), generator=gen)
    ids[0, 0] = rows - 1  # the last (padded) row
    cases["embed_ids"] = ids
    with torch.no_grad():
        cases["embed_out"] = model.embed_tokens(ids)

    # bf16: the same weights in a bf16 model with SDPA attention, bf16-rounded inputs.
    del model
    model = Qwen2Model(hf_config(fields, rows, "sdpa")).eval()
    model.load_state_dict({k: v.float() for k, v in state.items()})
    inv_freq = model.rotary_emb.inv_freq.clone()
    model = model.to(torch.bfloat16)
    # Module.to(bf16) also rounds RoPE's inv_freq buffer to bf16 (then used as fp32). The reference
    # stack (transformers 4.40.1, from_pretrained(torch_dtype=bf16)) computes cos / sin from fp32
    # frequencies and rounds only the tables, as focusvla does: restore the fp32 frequencies.
    assert model.rotary_emb.inv_freq.dtype == torch.bfloat16
    model.rotary_emb.inv_freq = inv_freq
    for L in lengths:
        embeds = cases[f"embeds_L{L}"].to(torch.bfloat16)
        cases[f"embeds_bf16_L{L}"] = embeds
        cases[f"hidden_bf16_L{L}"] = hidden_states(model, embeds)
    del model

    save_file({k: v.contiguous() for k, v in cases.items()}, os.path.join(d, "cases.safetensors"))
    print(f"{name}: {len(state)} tensors, lengths {lengths}, batch {batch_lengths}", flush=True)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    for name, fields, rows, lengths, batch_lengths, weight_dtype in SHAPES:
        gen = torch.Generator().manual_seed(SEED + sum(map(ord, name)))
        generate(out_dir, name, fields, rows, lengths, batch_lengths, weight_dtype, gen)
    gen_quantize.generate(out_dir)


if __name__ == "__main__":
    main()
