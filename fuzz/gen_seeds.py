#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/fuzz_*.cpp), written by the real writers: the pip
`safetensors` package, `torch.save`, `tokenizers`, and the reference configs in assets/.

    gen_seeds.py OUT_DIR [ASSETS_DIR]     (ASSETS_DIR: $FOCUSVLA_ASSETS, else <repo>/assets)

writes OUT_DIR/<target>/ for each target: safetensors_header, safetensors_file, json_configs,
tokenizer_encode, tokenizer_files, torch_pickle, torch_archive, and OUT_DIR/dicts/<target>.dict
(libFuzzer dictionaries: the keys, dtype names, opcodes and special tokens of each format, taken
from the seeds and the format definitions). Deterministic (seeded); re-running
rewrites the same files. The fuzzers only read these directories; what they find goes into a
corpus directory of their own (scripts/fuzz).
"""

import io
import json
import os
import random
import shutil
import struct
import sys
import zipfile
from collections import OrderedDict

import msgpack
import numpy as np
import torch
from safetensors.torch import save as save_safetensors
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 7919

# Must match fuzz_tokenizer_files.cpp.
FILE_SEPARATOR = b"\n--8<-- focusvla fuzz file --8<--\n"
# Must match fuzz_torch_pickle.cpp: storages data/0 .. data/15 of 4096 bytes each.
PICKLE_STORAGES = 16
PICKLE_STORAGE_BYTES = 4096

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(path, "wb") as f:
        f.write(data)


def random_tensor(gen, dtype, shape):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 3).to(dtype)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -(2**31)), min(info.max, 2**31 - 1)
    return torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64).to(dtype)


# ------------------------------------------------------------------------------------------------
# safetensors


def safetensors_files(gen):
    """name -> bytes of files written by the safetensors package."""
    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
              torch.int16, torch.int8, torch.uint8, torch.bool, torch.uint16, torch.uint32,
              torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2]
    shapes = [(3, 5), (7,), (2, 3, 4), (1, 1, 9), (13,)]
    every_dtype = OrderedDict()
    for i, dtype in enumerate(dtypes):
        every_dtype[f"layer.{i}.{str(dtype).split('.')[-1]}"] = random_tensor(gen, dtype, shapes[i % len(shapes)])
    every_dtype["scalar"] = torch.tensor(2.5)
    every_dtype["empty"] = torch.zeros((0, 4))
    files = {
        "every_dtype.safetensors": save_safetensors(dict(every_dtype), metadata={"format": "pt", "note": "focusvla"}),
        "one_tensor.safetensors": save_safetensors({"w": random_tensor(gen, torch.float32, (2, 2))}),
        "empty_dict.safetensors": save_safetensors({}),
        "metadata_only.safetensors": save_safetensors({}, metadata={"total_size": "0"}),
        "empties.safetensors": save_safetensors({"a": torch.zeros((0,)), "b": torch.zeros((3, 0)),
                                                 "c": torch.zeros((1,))}),
        "bf16_block.safetensors": save_safetensors(
            {f"model.layers.{i}.self_attn.{p}.weight": random_tensor(gen, torch.bfloat16, (4, 8))
             for i in range(2) for p in ("q_proj", "k_proj", "v_proj")}),
    }
    return files


def safetensors_header(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8:8 + n]


# ------------------------------------------------------------------------------------------------
# JSON configs


def json_configs(assets):
    ref = os.path.join(assets, "vla-adapter-reference")
    with open(os.path.join(ref, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with open(os.path.join(ref, "preprocessor_config.json"), encoding="utf-8") as f:
        preprocessor = json.load(f)
    out = {
        "config.json": json.dumps(config, indent=2),
        "preprocessor_config.json": json.dumps(preprocessor, indent=2),
    }
    # A small config.json: one dataset, the FocusVLA section, cameras, a single backbone variant.
    small = dict(config)
    first = next(iter(config["norm_stats"]))
    small["norm_stats"] = {first: config["norm_stats"][first]}
    small["num_images_in_input"] = 2
    small["focus"] = {"attention": "cascaded", "top_k": 256, "gate": "element", "value_source": "embeddings"}
    out["config_focus_small.json"] = json.dumps(small)
    single = dict(small)
    single["timm_model_ids"] = config["timm_model_ids"][:1]
    single["use_fused_vision_backbone"] = False
    single["image_sizes"] = config["image_sizes"][:1]
    single["focus"] = {"attention": "mixed", "top_k": 0, "gate": "none", "value_source": "layer"}
    single["norm_stats"] = None
    out["config_single_backbone.json"] = json.dumps(single)
    # preprocessor_config.json without the tvf parameters (means / stds apply).
    plain = {k: v for k, v in preprocessor.items() if k != "tvf_normalize_params"}
    out["preprocessor_plain.json"] = json.dumps(plain)
    # dataset_statistics.json as finetuning writes it (as scripts/make_checkpoint.py does).
    stats = json.loads(json.dumps(config["norm_stats"].get("bridge_orig", config["norm_stats"][first])))
    stats["proprio"] = {k: [0.0] * 8 for k in ("mean", "std", "min", "max", "q01", "q99")}
    stats["proprio"]["q01"] = [-0.5 - 0.1 * i for i in range(8)]
    stats["proprio"]["q99"] = [0.7 + 0.2 * i for i in range(8)]
    out["dataset_statistics.json"] = json.dumps({"libero_spatial_no_noops": stats}, indent=2)
    # model.safetensors.index.json as transformers writes it for a sharded save.
    weight_map = {f"language_model.model.layers.{i}.mlp.up_proj.weight": f"model-{i // 3 + 1:05d}-of-00003.safetensors"
                  for i in range(8)}
    out["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": 123456}, "weight_map": weight_map}, indent=2)
    return out


# ------------------------------------------------------------------------------------------------
# Tokenizer


def load_qwen(assets):
    tok_dir = os.path.join(assets, "qwen2.5-tokenizer")
    with open(os.path.join(tok_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(tok_dir, "merges.txt"), encoding="utf-8") as f:
        merges = [tuple(line.rstrip("\n").split(" ")) for line in f if line.strip() and not line.startswith("#version")]
    with open(os.path.join(tok_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return vocab, merges, config


def tokenizer_encode_seeds(assets, vocab, config, rng):
    with open(os.path.join(assets, "libero-sample", "observation.json"), encoding="utf-8") as f:
        task = json.load(f)["task_description"]
    special = [e["content"] for e in config["added_tokens_decoder"].values()]
    by_id = {v: k for k, v in vocab.items()}
    byte_decoder = byte_level_decoder()

    def token_text(i):
        return bytes(byte_decoder[c] for c in by_id[i])

    texts = {
        "task.txt": task.encode(),
        "task_upper.txt": task.upper().encode(),
        "openvla_prompt.txt": f"In: What action should the robot take to {task}?\nOut:".encode(),
        "qwen_chat_prompt.txt": (
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
            f"<|im_end|>\n<|im_start|>user\nWhat action should the robot take to {task}?<|im_end|>\n"
            "<|im_start|>assistant\n").encode(),
        "specials.txt": "".join(special).encode(),
        "specials_spaced.txt": " ".join(special).encode(),
        "whitespace.txt": " \t\n\r\n  \u00a0\u3000x  \n\n\ty".encode(),
        "numbers.txt": "0 12 345 6789 3.14159 1e-5 -42 ١٢٣".encode(),
        "contractions.txt": "it's I'M we'Re they've you'd she'll HE'S".encode(),
        "unicode_mix.txt": "Ünïcödé café naïve ΣΑΣ σας İstanbul ß ǅ 東京 한국어 😀👍🏽 \u0301e\u0301".encode(),
        "nfc.txt": "e\u0301 A\u030a \u1e9b\u0323 \uac00\u11a8 \u0958 \u2126 \ufb01".encode(),
        "greek_sigma.txt": "ΟΔΥΣΣΕΥΣ Σ ΑΣ. ΑΣ' ΑΣ\u0301".encode(),
        # Ill-formed UTF-8 (the target checks that these give an Error, not a crash).
        "invalid_lone_continuation.bin": b"abc\x80def",
        "invalid_truncated.bin": "pick up the bowl \u00e9".encode()[:-1],
        "invalid_overlong.bin": b"\xc0\xaf\xe0\x80\xaf",
        "invalid_surrogate.bin": b"x\xed\xa0\x80y",
        "invalid_above_max.bin": b"\xf4\x90\x80\x80",
        "invalid_ff.bin": b"\xff\xfe<|im_start|>",
    }
    # Random runs of real tokens (their bytes, so BPE has something to merge back).
    ids = sorted(by_id)
    for k in range(6):
        pieces = [token_text(rng.choice(ids)) for _ in range(rng.randint(3, 40))]
        texts[f"random_tokens_{k}.bin"] = b"".join(pieces)
    return texts


def byte_level_decoder():
    """GPT-2's byte-level alphabet, symbol -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def tiny_tokenizer(vocab, merges, config, n_merges):
    """The first n_merges Qwen2.5 merges with the 256 byte symbols, renumbered densely, and the
    Qwen special tokens after them: (vocab, merges, added token entries)."""
    symbols = sorted(byte_level_decoder(), key=lambda s: vocab[s])
    kept = [m for m in merges[:n_merges]]
    tokens = list(symbols)
    seen = set(tokens)
    for left, right in kept:
        for t in (left, right, left + right):
            if t not in seen:
                seen.add(t)
                tokens.append(t)
    small_vocab = {t: i for i, t in enumerate(tokens)}
    added = []
    for i, (_, entry) in enumerate(sorted(config["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))):
        added.append(dict(entry, id=len(tokens) + i))
    return small_vocab, kept, added


def fast_tokenizer_json(small_vocab, kept, added, extra_added=False, string_merges=False):
    tok = Tokenizer(models.BPE(vocab=small_vocab, merges=list(kept)))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(a["content"], special=True, normalized=False) for a in added])
    if extra_added:
        tok.add_tokens([AddedToken("robot arm", single_word=True, normalized=True),
                        AddedToken("<grip>", lstrip=True, rstrip=True, normalized=False),
                        AddedToken("café", normalized=True)])
    data = json.loads(tok.to_str())
    if string_merges:
        data["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    return json.dumps(data, ensure_ascii=False)


def tokenizer_files_seeds(vocab, merges, config):
    small_vocab, kept, added = tiny_tokenizer(vocab, merges, config, 300)
    seeds = {
        "fast.bin": b"\x00" + fast_tokenizer_json(small_vocab, kept, added).encode(),
        "fast_string_merges.bin": b"\x00" + fast_tokenizer_json(small_vocab, kept, added, string_merges=True).encode(),
        "fast_extra_added.bin": b"\x00" + fast_tokenizer_json(small_vocab, kept, added, extra_added=True).encode(),
    }
    tiny_vocab, tiny_kept, tiny_added = tiny_tokenizer(vocab, merges, config, 20)
    tiny = fast_tokenizer_json(tiny_vocab, tiny_kept, tiny_added[:3])
    seeds["fast_tiny.bin"] = b"\x00" + tiny.encode()
    # The other shapes the loader accepts: no normalizer, a Sequence of normalizers, no added
    # tokens, ignore_merges.
    variants = {
        "fast_tiny_no_normalizer.bin": lambda j: j.update(normalizer=None),
        "fast_tiny_sequence_normalizer.bin": lambda j: j.update(
            normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Sequence", "normalizers": []}]}),
        "fast_tiny_no_added.bin": lambda j: j.update(added_tokens=[]),
        "fast_tiny_ignore_merges.bin": lambda j: j["model"].update(ignore_merges=True),
    }
    for name, change in variants.items():
        j = json.loads(tiny)
        change(j)
        seeds[name] = b"\x00" + json.dumps(j, ensure_ascii=False).encode()

    def slow(v, m, a, with_config=True, with_added=True):
        parts = [json.dumps(v, ensure_ascii=False).encode(),
                 ("#version: 0.2\n" + "".join(f"{l} {r}\n" for l, r in m)).encode()]
        if with_config:
            decoder = {str(e["id"]): {k: e[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
                       for e in a}
            parts.append(json.dumps({"added_tokens_decoder": decoder}, ensure_ascii=False).encode())
            if with_added:
                parts.append(json.dumps({e["content"]: e["id"] for e in a}).encode())
        return b"\x01" + FILE_SEPARATOR.join(parts)

    seeds["slow.bin"] = slow(small_vocab, kept, added)
    seeds["slow_no_config.bin"] = slow(tiny_vocab, tiny_kept, tiny_added, with_config=False)
    seeds["slow_config_only.bin"] = slow(tiny_vocab, tiny_kept, tiny_added[:4], with_added=False)
    return seeds


# ------------------------------------------------------------------------------------------------
# torch.save


class TinyHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.register_buffer("steps", torch.tensor([7], dtype=torch.int64))


def torch_state_dicts(gen):
    """name -> state dict; each fits fuzz_torch_pickle's storages (<= 16 of <= 4 KiB)."""
    torch.manual_seed(SEED)
    dicts = {}
    dicts["module_state_dict"] = TinyHead().state_dict()  # OrderedDict with _metadata
    mixed = OrderedDict()
    mixed["module.model.fc1.weight"] = random_tensor(gen, torch.float32, (5, 3))
    mixed["module.model.fc1.bias"] = random_tensor(gen, torch.bfloat16, (5,))
    mixed["module.model.count"] = random_tensor(gen, torch.int64, (2,))
    base = random_tensor(gen, torch.float32, (4, 6))
    mixed["module.model.view"] = base.t()  # non-contiguous
    mixed["module.model.row"] = base[1]    # shares the storage, with an offset
    dicts["mixed_views"] = mixed
    dtypes = OrderedDict()
    for i, dtype in enumerate([torch.float64, torch.float16, torch.int32, torch.int16, torch.int8, torch.uint8,
                               torch.bool]):
        dtypes[f"t{i}"] = random_tensor(gen, dtype, (3,))
    dtypes["scalar"] = torch.tensor(1.5)
    dtypes["empty"] = torch.zeros((0, 3))
    dicts["dtypes"] = dtypes
    # The dtypes without a legacy storage class: torch.save writes them with _rebuild_tensor_v3
    # and an UntypedStorage.
    dicts["dtypes_v3"] = OrderedDict(
        (f"t{i}", random_tensor(gen, dtype, (3,)))
        for i, dtype in enumerate([torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2]))
    dicts["plain_dict"] = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2)}
    dicts["parameters"] = OrderedDict(w=torch.nn.Parameter(torch.ones(2, 2)), b=torch.nn.Parameter(torch.zeros(2)))
    dicts["empty"] = OrderedDict()
    return dicts


def torch_save_bytes(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def data_pkl(archive):
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = z.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        for n in names:
            if n.startswith(prefix + "data/"):
                key = n[len(prefix + "data/"):]
                assert key.isdigit() and int(key) < PICKLE_STORAGES, f"storage key {key} beyond the harness's records"
                assert z.getinfo(n).file_size <= PICKLE_STORAGE_BYTES, f"storage {key} larger than the harness's records"
        return z.read(pkl)


# ------------------------------------------------------------------------------------------------
# Dictionaries (libFuzzer -dict=): the words each format is made of, collected from the seeds
# and the format definitions rather than typed in.


def dict_line(word):
    if isinstance(word, str):
        word = word.encode("utf-8")
    text = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in word)
    return f'"{text}"\n'


def write_dict(path, words):
    unique = sorted({w.encode("utf-8") if isinstance(w, str) else w for w in words if w})
    write(path, "".join(dict_line(w) for w in unique))


def json_words(blobs, max_len=40):
    """JSON punctuation and literals, number edge cases, and every key and short string value of
    the JSON documents in `blobs`."""
    words = ["{", "}", "[", "]", ":", ",", '""', "true", "false", "null", "-", "0", "-1", "1e308", "1e-308",
             "4.9e-324", "9223372036854775807", "9223372036854775808", "18446744073709551615",
             "18446744073709551616", "-9223372036854775808", "\\u0000", "\\ud800", "\\\""]

    def walk(value):
        if isinstance(value, dict):
            for k, v in value.items():
                if len(k) <= max_len:
                    words.append(json.dumps(k))
                walk(v)
        elif isinstance(value, list):
            for v in value[:64]:
                walk(v)
        elif isinstance(value, str) and len(value) <= max_len:
            words.append(json.dumps(value))

    for blob in blobs:
        try:
            walk(json.loads(blob))
        except ValueError:
            pass
    return words


def pickle_words():
    """Every pickle opcode, the globals a state dict names, and the shapes of their arguments."""
    import pickletools
    words = [op.code.encode("latin-1") for op in pickletools.opcodes]
    for module, name in [("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                         ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
                         ("torch.storage", "UntypedStorage"), ("builtins", "set"), ("torch", "float32")]:
        words.append(f"c{module}\n{name}\n".encode())
        words.append(b"\x8c" + bytes([len(module)]) + module.encode())
        words.append(b"\x8c" + bytes([len(name)]) + name.encode())
    for storage in ["Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"]:
        words.append(f"ctorch\n{storage}Storage\n".encode())
    words += [b"\x8c\x07storage", b"\x8c\x03cpu", b"X\x07\x00\x00\x00storage", b"\x80\x02", b"\x80\x05",
              b"\x95\x00\x00\x00\x00\x00\x00\x00\x00", b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
              b"J\xff\xff\xff\xff", b"q\x00", b"h\x00", b"r\x00\x00\x00\x00", b"j\x00\x00\x00\x00"]
    return words


def zip_words():
    return [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"data.pkl",
            b"archive/data.pkl", b"archive/data/0", b"archive/version", b"archive/.data/version",
            b"archive/byteorder", b"little", b"3\n", b"\xff\xff\xff\xff"] + pickle_words()


def tokenizer_words(config, seeds):
    words = [e["content"] for e in config["added_tokens_decoder"].values()]
    words += ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "\r\n", "\u00a0", "\u3000", "\u0301", "\u0307",
              "\u03a3", "\u0130", "\u1e9e", "\ufffd", "\U0001f600", "\u200d", "\ufeff", "In: ", "?\nOut:",
              "What action should the robot take to "]
    words += [t for t in seeds.values() if len(t) <= 16]
    return words


# ------------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[1]
    assets = sys.argv[2] if len(sys.argv) == 3 else os.environ.get(
        "FOCUSVLA_ASSETS", os.path.join(HERE, "..", "assets"))
    gen = torch.Generator().manual_seed(SEED)
    rng = random.Random(SEED)

    def target_dir(name):
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    d_file, d_header = target_dir("safetensors_file"), target_dir("safetensors_header")
    for name, blob in safetensors_files(gen).items():
        write(os.path.join(d_file, name), blob)
        write(os.path.join(d_header, name.replace(".safetensors", ".json")), safetensors_header(blob))

    d = target_dir("json_configs")
    for name, text in json_configs(assets).items():
        write(os.path.join(d, name), text)

    vocab, merges, config = load_qwen(assets)
    d = target_dir("tokenizer_encode")
    for name, data in tokenizer_encode_seeds(assets, vocab, config, rng).items():
        write(os.path.join(d, name), data)
    d = target_dir("tokenizer_files")
    for name, data in tokenizer_files_seeds(vocab, merges, config).items():
        write(os.path.join(d, name), data)

    d_pkl, d_archive = target_dir("torch_pickle"), target_dir("torch_archive")
    for name, state in torch_state_dicts(gen).items():
        archive = torch_save_bytes(state)
        write(os.path.join(d_archive, name + ".pt"), archive)
        write(os.path.join(d_pkl, name + ".pkl"), data_pkl(archive))

    d = target_dir("msgpack_request")
    for name, data in msgpack_request_seeds(rng).items():
        write(os.path.join(d, name), data)

    d = target_dir("dicts")

    def seeds_of(target):
        folder = os.path.join(out, target)
        result = {}
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                result[name] = f.read()
        return result

    safetensors_words = json_words(seeds_of("safetensors_header").values()) + [
        '"__metadata__"', '"dtype"', '"shape"', '"data_offsets"', "\x00\x00\x00\x00\x00\x00\x00",
        "\xff\xff\xff\xff\xff\xff\xff\xff"] + [json.dumps(t) for t in (
        "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2")]
    write_dict(os.path.join(d, "safetensors_header.dict"), safetensors_words)
    write_dict(os.path.join(d, "safetensors_file.dict"), safetensors_words)
    write_dict(os.path.join(d, "json_configs.dict"), json_words(seeds_of("json_configs").values()))
    texts = {k: v.decode("utf-8", "replace") for k, v in seeds_of("tokenizer_encode").items()}
    write_dict(os.path.join(d, "tokenizer_encode.dict"), tokenizer_words(config, texts))
    files = seeds_of("tokenizer_files")
    parts = [p for blob in files.values() for p in blob[1:].split(FILE_SEPARATOR)]
    write_dict(os.path.join(d, "tokenizer_files.dict"),
               json_words(parts, max_len=24) + [FILE_SEPARATOR, b"#version: 0.2\n", b"\n"])
    write_dict(os.path.join(d, "torch_pickle.dict"), pickle_words())
    write_dict(os.path.join(d, "torch_archive.dict"), zip_words())
    write_dict(os.path.join(d, "msgpack_request.dict"), msgpack_words())

    total = sum(len(files) for _, _, files in os.walk(out))
    print(f"gen_seeds: {total} seed files under {out}")


def pack_request(obj):
    """openpi_client.msgpack_numpy.packb (openpi-client pins numpy<2, so it is not in this
    environment): numpy arrays and scalars as its pack_array writes them."""
    def pack_array(o):
        if isinstance(o, np.ndarray):
            return {b"__ndarray__": True, b"data": o.tobytes(), b"dtype": o.dtype.str, b"shape": o.shape}
        if isinstance(o, np.generic):
            return {b"__npgeneric__": True, b"data": o.item(), b"dtype": o.dtype.str}
        return o
    return msgpack.packb(obj, default=pack_array)


def msgpack_request_seeds(rng):
    """Requests of the server (fuzz_msgpack_request.cpp: 2 cameras, 8-dim state, sides <= 64)."""
    np_rng = np.random.default_rng(rng.randrange(2 ** 32))

    def image(h, w):
        return np_rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def libero(h=16, w=16, **over):
        obs = {"observation/image": image(h, w), "observation/wrist_image": image(w, h),
               "observation/state": np_rng.standard_normal(8), "prompt": "put the bowl on the plate"}
        obs.update(over)
        return obs

    seeds = {
        "libero.msgpack": libero(),
        "libero_64.msgpack": libero(64, 64),
        "float32_state.msgpack": libero(**{"observation/state": np_rng.standard_normal(8).astype(np.float32)}),
        "list_state.msgpack": libero(**{"observation/state": [0.5, -1, 2, 0.0, 3, 1e-3, -2.5, 7]}),
        "numpy_prompt.msgpack": libero(prompt=np.str_("open the drawer")),
        "extra_keys.msgpack": libero(extra=[1, {"a": None}, b"x"], scalar=np.float32(1.5)),
        "nested.msgpack": {"observation": {"image": image(8, 8), "wrist_image": image(8, 8),
                                           "state": np_rng.standard_normal(8)}, "prompt": "stack the cups"},
        "bad_image_dtype.msgpack": libero(**{"observation/image": np.zeros((8, 8, 3), np.float32)}),
        "missing_prompt.msgpack": {k: v for k, v in libero().items() if k != "prompt"},
    }
    return {name: pack_request(obs) for name, obs in seeds.items()}


def msgpack_words():
    words = [b"__ndarray__", b"__npgeneric__", b"data", b"dtype", b"shape", b"|u1", b"<f4", b"<f8", b"<i8",
             b"observation/image", b"observation/wrist_image", b"observation/state", b"prompt", b"observation"]
    return [pack_request(w.decode()) for w in words] + [msgpack.packb(w) for w in words] + [
        b"\xc3", b"\xc2", b"\xc0", b"\x93", b"\x83", b"\xdc\x00\x03", b"\xcb", b"\xca", b"\xc4", b"\xc5", b"\xd9"]


if __name__ == "__main__":
    main()
