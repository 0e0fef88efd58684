"""Oracle data for nn/quantize.h (called by gen_llm.py: the llm test group holds tests/nn/):
W8A8 int8, weight-only int8 and fp8 quantization, computed with PyTorch's own ops.

    quantize.safetensors: per case <case>.{x, weight, bias} inputs and
      <case>.w{127,63}.{values, scales}   quantize_rows_int8(weight, qmax)
      <case>.fp8.{values, scales}         quantize_rows_fp8(weight) (values as uint8 bit patterns)
      <case>.tokens.{values, scales}      quantize_tokens_int8(x as (M, K))
      <case>.tokens_fp8.{values, scales}  quantize_tokens_fp8(x as (M, K)) (bit patterns)
      <case>.w{127,63}.int8               int8_linear(x, that weight, bias): exact integer products
                                          (int64 matmul), then float(acc) * x_scale * w_scale + bias
                                          in float32, rounded once to x's dtype
      <case>.w{127,63}.int8_packed        the same through the packed GEMM (oneDNN's epilogue t = acc *
                                          w_scale in the output dtype, then t * x_scale + bias)
      <case>.w{127,63}.int8_packed_f32out the packed GEMM writing float32 for a bf16 x (CPUs without
                                          native bf16: t not rounded to bf16, the result once)
      <case>.weight_only                  int8_weight_only_linear (weight quantized with qmax 127)
      <case>.float                        the float layer, F.linear in float64 (the error baseline)

Rounding is round-half-to-even (torch.round) throughout; scales are absmax / qmax in float32.
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

FP8_MAX = 448.0

# name: (batch shape, in, out, x dtype, bias, special rows)
CASES = {
    "f32_small": ((3, 5), 40, 24, torch.float32, True, False),
    "f32_odd": ((7,), 33, 17, torch.float32, False, False),
    "bf16_mlp": ((2, 61), 256, 96, torch.bfloat16, True, False),
    "bf16_one_token": ((1,), 128, 64, torch.bfloat16, True, False),
    "f32_zero_and_outlier_rows": ((6,), 64, 32, torch.float32, True, True),
}


def quantize_rows_int8(w, qmax):
    w = w.float()
    amax = w.abs().amax(1)
    scales = amax / qmax
    inverse = torch.where(amax > 0, torch.tensor(float(qmax)) / amax, torch.zeros_like(amax))
    values = torch.round(w * inverse[:, None]).clamp(-qmax, qmax).nan_to_num(0).to(torch.int8)
    return values, scales


def quantize_tokens_int8(x):
    x = x.float()
    amax = x.abs().amax(1)
    scales = amax / 127.0
    inverse = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    values = torch.round(x * inverse[:, None]).clamp(-127, 127).to(torch.int8)
    return values, scales


def quantize_fp8(t, dim_keep):
    t = t.float()
    amax = t.abs().amax(1, keepdim=True)
    scales = amax / FP8_MAX
    inverse = torch.where(amax > 0, torch.tensor(FP8_MAX) / amax, torch.zeros_like(amax))
    values = (t * inverse).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return values, scales if dim_keep else scales[:, 0]


def int8_linear(x, values, scales, bias):
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    xq, xs = quantize_tokens_int8(x2)
    acc = (xq.long() @ values.long().t()).to(torch.int32)  # exact, as int32 accumulation
    y = acc.float() * xs[:, None] * scales[None, :]
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], values.shape[0])


def int8_linear_packed(x, values, scales, bias, f32_out=False):
    """The packed path: oneDNN's epilogue t = acc * w_scale rounded to the output dtype (bf16 for
    bf16 inputs, else float32; float32 with f32_out), then t * x_scale + bias rounded once more."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    xq, xs = quantize_tokens_int8(x2)
    acc = (xq.long() @ values.long().t()).to(torch.int32)
    dtype = torch.bfloat16 if x.dtype == torch.bfloat16 and not f32_out else torch.float32
    t = (acc.float() * scales[None, :]).to(dtype)
    y = t.float() * xs[:, None]
    if bias is not None:
        y = y + bias.float()
    return y.to(dtype).to(x.dtype).reshape(*x.shape[:-1], values.shape[0])


def weight_only(x, values, scales, bias):
    y = F.linear(x, values.to(x.dtype)) * scales.to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return y


def generate(out_dir):
    gen = torch.Generator().manual_seed(1234)
    out = {}
    for name, (batch, k, n, dtype, has_bias, special) in CASES.items():
        x = torch.randn(*batch, k, generator=gen)
        # Activations with a few outlier channels, as transformer activations have.
        x[..., 3] *= 20.0
        weight = torch.randn(n, k, generator=gen) * 0.05
        bias = torch.randn(n, generator=gen) if has_bias else None
        if special:
            x[1] = 0.0           # an all-zero token: scale 0, output = bias
            x[2, 5] = 1e4        # one huge value: its token's scale follows it
            weight[0] = 0.0      # an all-zero weight row
        x = x.to(dtype)
        weight = weight.to(dtype)
        if bias is not None:
            bias = bias.to(dtype)
        out[f"{name}.x"] = x
        out[f"{name}.weight"] = weight
        if bias is not None:
            out[f"{name}.bias"] = bias
        for qmax in (127, 63):
            values, scales = quantize_rows_int8(weight, qmax)
            out[f"{name}.w{qmax}.values"] = values
            out[f"{name}.w{qmax}.scales"] = scales
            out[f"{name}.w{qmax}.int8"] = int8_linear(x, values, scales, None if bias is None else bias.float())
            out[f"{name}.w{qmax}.int8_packed"] = int8_linear_packed(x, values, scales, None if bias is None else bias.float())
            out[f"{name}.w{qmax}.int8_packed_f32out"] = int8_linear_packed(
                x, values, scales, None if bias is None else bias.float(), f32_out=True)
        values, scales = quantize_rows_int8(weight, 127)
        out[f"{name}.weight_only"] = weight_only(x, values, scales, bias)
        tv, ts = quantize_tokens_int8(x.reshape(-1, k))
        out[f"{name}.tokens.values"] = tv
        out[f"{name}.tokens.scales"] = ts
        fv, fs = quantize_fp8(weight, dim_keep=False)
        out[f"{name}.fp8.values"] = fv.view(torch.uint8)
        out[f"{name}.fp8.scales"] = fs
        av, asc = quantize_fp8(x.reshape(-1, k), dim_keep=True)
        out[f"{name}.tokens_fp8.values"] = av.view(torch.uint8)
        out[f"{name}.tokens_fp8.scales"] = asc
        out[f"{name}.float"] = F.linear(x.double(), weight.double(), None if bias is None else bias.double()).float()
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, "quantize.safetensors"))
    print(f"quantize: {len(CASES)} cases", flush=True)
