#!/usr/bin/env python3
"""Oracle for the text module: token ids from HF `tokenizers` (Qwen2.5) and prompt strings.

Usage: python gen_text.py OUT_DIR [ASSETS_DIR]   (ASSETS_DIR defaults to $FOCUSVLA_ASSETS)

Reads ASSETS_DIR/qwen2.5-tokenizer (vocab.json, merges.txt, tokenizer_config.json,
added_tokens.json) and writes, under OUT_DIR/text/ (OUT_DIR itself when it already ends in
"text"):
  tokenizer_cases.json       {"meta", "cases": [{"text", "ids", "decoded"}],
                              "decode_cases": [{"ids", "decoded"}]}
  tokenizer_json/tokenizer.json         the same tokenizer in HF fast format, plus added tokens
                                        with lstrip / rstrip / single_word / normalized=true
  tokenizer_json_string_merges/tokenizer.json   the same with merges spelled "a b"
  tokenizer_json_cases.json  cases for that tokenizer.json
  prompt_cases.json          [{"format", "task", "prompt", "ids"}]
  lowercase_cases.json       {"meta", "groups": {name: [[text, text.lower()] or [text] when
                              text.lower() == text]}}: every code point with a lowercase mapping
                              alone and in context, Final_Sigma contexts, the Cased /
                              Case_Ignorable properties, and a sweep of all code points

The reference is `AutoTokenizer.from_pretrained(asset_dir)` (what the Python model code uses).
Lower-casing is Python's own str.lower() (SPEC section 6); first this checks that
src/text/unicode_lower.inc is what scripts/gen_unicode_lower.py gives with this Python.
An independent construction with `tokenizers` (BPE.from_file + NFC + the Qwen2 Split regex +
ByteLevel, added tokens as in tokenizer_config.json) must agree with it on every case.
Everything is deterministic (seeded).
"""

import json
import os
import random
import subprocess
import sys
import unicodedata

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer

# The Qwen2 pre-tokenizer regex; must be bit-for-bit what HF uses (checked below).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# SPEC section 6.
OPENVLA_TEMPLATE = "In: What action should the robot take to {task}?\nOut:"
QWEN_CHAT_TEMPLATE = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\nWhat action should the robot take to {task}?<|im_end|>\n"
    "<|im_start|>assistant\n"
)

SEED = 20240611


# --------------------------------------------------------------------------------------------
# Tokenizers


def load_reference(asset_dir):
    tok = AutoTokenizer.from_pretrained(asset_dir)
    backend = json.loads(tok.backend_tokenizer.to_str())
    pattern = backend["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert pattern == QWEN2_PATTERN, f"HF Qwen2 pattern differs from ours:\n{pattern}"
    assert backend["normalizer"] == {"type": "NFC"}, backend["normalizer"]
    return tok


def build_independent(asset_dir):
    """The tokenizer from its files with `tokenizers` alone, as transformers assembles it."""
    tok = Tokenizer(
        models.BPE.from_file(
            os.path.join(asset_dir, "vocab.json"), os.path.join(asset_dir, "merges.txt")
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    with open(os.path.join(asset_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        decoder = json.load(f)["added_tokens_decoder"]
    with open(os.path.join(asset_dir, "added_tokens.json"), encoding="utf-8") as f:
        added_ids = json.load(f)
    for id_text, entry in sorted(decoder.items(), key=lambda item: int(item[0])):
        token = AddedToken(
            entry["content"],
            single_word=entry["single_word"],
            lstrip=entry["lstrip"],
            rstrip=entry["rstrip"],
            normalized=entry["normalized"],
            special=entry["special"],
        )
        if entry["special"]:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        assert tok.token_to_id(entry["content"]) == int(id_text), entry
        assert added_ids[entry["content"]] == int(id_text), entry
    assert len(added_ids) == len(decoder) == 22
    return tok


# --------------------------------------------------------------------------------------------
# Strings

VERBS = ["put", "place", "pick up", "open", "close", "turn on", "turn off", "push", "move",
         "stack", "slide", "lift", "grab", "insert", "rotate", "pour", "wipe", "fold"]
OBJECTS = ["the black bowl", "the alphabet soup", "the cream cheese", "the ketchup",
           "the tomato sauce", "the butter", "the milk", "the orange juice", "the wine bottle",
           "the top drawer", "the middle drawer of the cabinet", "the stove", "the microwave",
           "the red mug", "the white mug", "the yellow and white mug", "the chocolate pudding",
           "the basket", "the plate", "the frying pan", "the moka pot", "the book", "both pots",
           "the salad dressing", "the bbq sauce", "the 2nd cup", "block #3", "the 10cm cube"]
PLACES = ["on the plate", "in the basket", "on top of the cabinet", "into the drawer",
          "on the stove", "in the tray", "to the left of the plate", "on the right side",
          "next to the cookie box", "at (0.25, -0.1)", "behind the caddy", "under the shelf",
          "in the back compartment of the caddy", "on the wooden cabinet shelf"]
WORDS = ["robot", "arm", "gripper", "table", "kitchen", "Hello", "WORLD", "tokenizer",
         "don't", "it's", "we're", "they've", "I'm", "you'll", "he'd", "O'Neil", "e-mail",
         "state-of-the-art", "x86_64", "C++17", "naïve", "café", "Zürich", "straße", "Ærø",
         "Привет", "мир", "Γειά", "σου", "שלום", "مرحبا", "بالعالم", "नमस्ते", "สวัสดี",
         "こんにちは", "カタカナ", "你好", "世界", "机器人", "把碗放在盘子上", "안녕하세요",
         "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "𝐀𝐁𝐂", "𠜎𠜱", "𝄞", "🤖", "ﬁ", "Ⅻ", "½",
         "²", "٣٤٥", "१२३", "〇", "\u00a0", "…", "—", "“quoted”", "‘single’"]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t\t", "\u00a0",
              "\u3000", "\u2028", "\u2029", "\u0085", "\u000b", "\u000c", "\u180e", "\u200b",
              "\u2003", " \t \n"]
PUNCTUATION = "!?.,;:-_()[]{}<>/\\|@#$%^&*~`'\"+=§¶·¿¡«»"
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
           "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
           "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
           "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
           "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]

# Where the Unicode versions of the regex / NFC libraries disagree (see src/text/bpe_tokenizer.cpp):
# letters and digits added in Unicode 15/16, combining marks newer than HF's NFC tables (plus
# U+11930..U+11938), and U+180E.
VERSION_SENSITIVE = [
    (0x1C89, 0x1C8A), (0xA7CB, 0xA7CD), (0xA7DA, 0xA7DC), (0x105C0, 0x105F3), (0x10D40, 0x10D85),
    (0x10EC2, 0x10EC4), (0x1123F, 0x11240), (0x11380, 0x113D3), (0x116D0, 0x116E3),
    (0x11BC0, 0x11BF9), (0x11F02, 0x11F59), (0x1342F, 0x1342F), (0x13441, 0x13446),
    (0x13460, 0x143FA), (0x16100, 0x16139), (0x16D40, 0x16D79), (0x18CFF, 0x18CFF),
    (0x1B132, 0x1B132), (0x1B155, 0x1B155), (0x1CCF0, 0x1CCF9), (0x1D2C0, 0x1D2D3),
    (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x1E4D0, 0x1E4F9), (0x1E5D0, 0x1E5FA),
    (0x2B739, 0x2B739), (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF),
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C),
    (0xD3B, 0xD3C), (0xEBA, 0xEBA), (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA),
    (0xA82C, 0xA82C), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10EFD, 0x10EFF),
    (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070), (0x1133B, 0x1133B),
    (0x1145E, 0x1145E), (0x11839, 0x1183A), (0x11930, 0x11943), (0x119E0, 0x119E0),
    (0x11A34, 0x11A34), (0x11A47, 0x11A47), (0x11A99, 0x11A99), (0x11D42, 0x11D45),
    (0x11D97, 0x11D97), (0x11F41, 0x11F42), (0x16FF0, 0x16FF1), (0x1E08F, 0x1E08F),
    (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF), (0x1E4EC, 0x1E4EF),
    (0x180E, 0x180E),
]


def random_case(rng, text):
    mode = rng.randrange(4)
    if mode == 0:
        return text
    if mode == 1:
        return text.upper()
    if mode == 2:
        return text.title()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in text)


def instruction(rng):
    text = f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.7:
        text += f" {rng.choice(PLACES)}"
    if rng.random() < 0.2:
        text += f" and {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    return text


def random_number(rng):
    kind = rng.randrange(6)
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
    if kind == 0:
        return digits
    if kind == 1:
        return f"{rng.uniform(-1000, 1000):.{rng.randint(0, 8)}f}"
    if kind == 2:
        return f"{rng.randint(0, 10**9):,}"
    if kind == 3:
        return f"x={digits}"
    if kind == 4:
        return f"{rng.randint(0, 99)}th"
    return f"{rng.random():e}"


def random_code_point(rng):
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
              (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF),
              (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2100, 0x214F),
              (0x2190, 0x21FF), (0x2200, 0x22FF), (0x3000, 0x303F), (0x3040, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFB00, 0xFB4F), (0xFE00, 0xFE0F),
              (0xFF00, 0xFFEF), (0x10000, 0x1007F), (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF),
              (0x20000, 0x2A6DF), (0xE0000, 0xE007F), (0xF0000, 0xF0010), (0x0, 0x1F)]
    first, last = rng.choice(blocks)
    return chr(rng.randint(first, last))


def fixed_cases():
    cases = [
        "", " ", "  ", "\t", "\n", "\r\n", "\r", "a", "A", "0", "'", "''", "\u0000", "a\u0000b",
        "Hello world", "Hello  world", "Hello world ", "Hello world  ", " Hello", "  Hello",
        "hello\nworld", "hello\r\nworld", "hello \r\n world", "hello\n\n\nworld", "a \n b",
        "trailing spaces   ", "tabs\tand\ttabs", "\t\tindented", "line1\nline2\n",
        "12345", "1234567890123456789012345678901234567890", "3.14159", "-42", "1e-10",
        "version 2.5.1", "2024-06-11 12:34:56", "$1,000,000.00", "0x1F600", "٣٤٥", "१२३४",
        "I'LL", "I'll", "you'RE", "WE'VE", "she'S", "DON'T", "I'M", "he'D", "'s", "'S", "'ll",
        "'ſ", "don’t", "rock'n'roll", "''s", "'sss", "it's'", "x's'y",
        "!!!", "...", "?!?!", "---", "***", "(a)", "[b]", "{c}", "a,b;c:d", "!!! ???",
        " !!!", "!!!\n", "!!!\n\n", "a!!!\r\nb", "\"quoted\"", "'single'", "@user #tag",
        "e\u0301", "cafe\u0301", "A\u030a", "\u212b", "\u2126", "a\u0301\u0316", "a\u0316\u0301",
        "\u1100\u1161\u11a8", "\uac00\u11a8", "ﬁ", "ǅ", "Å", "Ω",
        "e\u0301<|im_end|>\u0301", "e<|im_end|>\u0301",
        "a<|im_end|>b", "<|endoftext|><|endoftext|>", "<|im_start|>", "<|im_start|>user\nhi",
        "<|im_start|><|im_end|>", "<|im_end", "<|im_end|", "<|im_end|>>", "<<|im_start|>",
        " <|im_end|> ", "  <|im_end|>  ", "x<|endoftext|>y<|endoftext|>z", "<tool_call>f()</tool_call>",
        "<|fim_prefix|>def<|fim_suffix|>pass<|fim_middle|>", "<|IM_END|>", "< |im_end|>",
        "你好世界", "机器人把碗放在盘子上。", "こんにちは世界", "안녕하세요 세계", "مرحبا بالعالم",
        "שלום עולם", "Привет, мир!", "Γειά σου Κόσμε", "नमस्ते दुनिया", "สวัสดีชาวโลก",
        "😀😀😀", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "👍🏽 ok", "❤️", "𝐀𝐁𝐂", "𠜎𠜱𠝹", "🤖 robot",
        "a" * 65, "a" * 200, "ab" * 100, "x" * 1000, "的" * 300, "😀" * 50, "9" * 300,
        " " * 100, " " * 1000 + "a", "\n" * 50, "!" * 200, "abc " * 200,
        "Supercalifragilisticexpialidocious" * 3,
        "https://example.com/path/to/resource?query=value&other=123#anchor",
        "def f(x):\n    return x ** 2\n", "int main() { return 0; }",
        "\u00a0\u00a0a", "a\u3000b", "a\u2028b", "a\u0085b", "a\u180eb", "\u180e", "a\u200bb",
    ]
    for special in SPECIAL:
        cases += [special, f"x{special}y", f" {special} ", f"{special}{special}"]
    for c in range(128):
        cases += [chr(c), f"a{chr(c)}b", f"{chr(c)}{chr(c)} {chr(c)}"]
    return cases


def version_sensitive_cases():
    cases = []
    for first, last in VERSION_SENSITIVE:
        cps = [chr(c) for c in range(first, last + 1)]
        if len(cps) > 96:  # long ranges: their two ends
            cps = cps[:64] + cps[-32:]
        for i in range(0, len(cps), 16):
            chunk = "".join(cps[i:i + 16])
            cases += [chunk, f"x{chunk} 9{chunk[:3]}!", " ".join(cps[i:i + 16])]
        for c in cps[:8]:
            cases += [f"a{c}\u0301", f"\u0301{c}\u0316", f"{c}{c}9{c}\r\n{c}  {c}"]
    return cases


def sweep_cases():
    """32 consecutive code points from every 1024-block of planes 0-3 and 14."""
    cases = []
    for start in list(range(0, 0x40000, 1024)) + list(range(0xE0000, 0xE1000, 1024)):
        cps = [chr(c) for c in range(start, start + 32) if not 0xD800 <= c < 0xE000]
        if cps:
            cases.append("x" + "".join(cps) + " " + " ".join(cps[:4]))
    return cases


def random_cases(rng):
    cases = []
    for _ in range(600):
        cases.append(random_case(rng, instruction(rng)))
    for _ in range(150):
        cases.append(OPENVLA_TEMPLATE.format(task=random_case(rng, instruction(rng)).lower()))
        cases.append(QWEN_CHAT_TEMPLATE.format(task=random_case(rng, instruction(rng)).lower()))
    for _ in range(200):
        cases.append(" ".join(random_number(rng) for _ in range(rng.randint(1, 5))))
    for _ in range(200):
        cases.append("".join(rng.choice(PUNCTUATION) for _ in range(rng.randint(1, 12)))
                     + rng.choice(["", " ", "\n", "\r\n", "a", "9"]))
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(1, 8)):
            parts.append(random_case(rng, rng.choice(WORDS)))
            parts.append(rng.choice(WHITESPACE))
        cases.append("".join(parts))
    for _ in range(200):
        word = rng.choice(["i", "you", "WE", "they", "He", "it", "O"])
        parts = [word + random_case(rng, rng.choice(CONTRACTIONS)) for _ in range(rng.randint(1, 4))]
        cases.append(rng.choice([" ", "", "\n"]).join(parts))
    for _ in range(300):
        cases.append("".join(random_code_point(rng) for _ in range(rng.randint(1, 24))))
    for _ in range(200):
        pieces = [rng.choice(WORDS + SPECIAL + WHITESPACE + [random_number(rng)])
                  for _ in range(rng.randint(1, 10))]
        cases.append("".join(pieces))
    for _ in range(60):
        cases.append("".join(random_code_point(rng) for _ in range(rng.randint(60, 300))))
    return cases


# --------------------------------------------------------------------------------------------
# Cases


def encode_cases(reference, independent, texts):
    cases = []
    seen = set()
    for text in texts:
        if text in seen:
            continue
        seen.add(text)
        ids = reference.encode(text, add_special_tokens=False)
        other = independent.encode(text, add_special_tokens=False).ids
        assert ids == other, f"reference and independent tokenizers disagree on {text!r}"
        decoded = reference.decode(ids, skip_special_tokens=False)
        assert decoded == independent.decode(ids, skip_special_tokens=False), text
        cases.append({"text": text, "ids": ids, "decoded": decoded})
    return cases


def decode_cases(reference, rng):
    size = len(reference)
    sequences = [[i] for i in range(256)]
    sequences += [[i] for i in range(151643, 151665)]
    sequences += [[rng.randrange(size) for _ in range(rng.randint(1, 8))] for _ in range(400)]
    return [{"ids": ids, "decoded": reference.decode(ids, skip_special_tokens=False)}
            for ids in sequences]


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=True, indent=None, separators=(",", ":"))
        f.write("\n")


def tokenizer_json_variant(reference, out_dir):
    """HF fast format with extra added tokens; written with pair merges and string merges."""
    tok = Tokenizer.from_str(reference.backend_tokenizer.to_str())
    tok.add_tokens([
        AddedToken("[LS]", lstrip=True, normalized=False),
        AddedToken("[RS]", rstrip=True, normalized=False),
        AddedToken("[SW]", single_word=True, normalized=False),
        AddedToken("he\u0301llo", normalized=True),
        AddedToken("Ωmega", normalized=True),
    ])
    tok.add_special_tokens([AddedToken("<|robot|>", normalized=False, special=True)])
    texts = [
        "[LS]", "a [LS]", "a   [LS]b", "a\t\n [LS] c", "[LS][LS]", " [LS] [LS]", "[RS]",
        "[RS] a", "[RS]   a", "x[RS]\n\ny", "[RS] [RS] z", "[SW]", "a [SW] b", "a[SW]b",
        "a [SW]b", "a[SW] b", "é[SW]", "1[SW]2", "_[SW]_", "![SW]!", " [SW]", "\u00a0[SW]\u00a0",
        "héllo", "he\u0301llo", "say héllo!", "HÉLLO", "hello", "Ωmega", "\u2126mega",
        "<|robot|>", "a<|robot|>b", " <|robot|> [LS] [RS] [SW] héllo <|im_end|>",
        "[LS][RS][SW]", "héllo<|im_end|>héllo",
    ]
    texts += [case["text"] for case in json.load(
        open(os.path.join(out_dir, "tokenizer_cases.json"), encoding="utf-8"))["cases"][:400]]
    cases = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    decodes = [{"ids": [i], "decoded": tok.decode([i], skip_special_tokens=False)}
               for i in range(151665, tok.get_vocab_size(with_added_tokens=True))]

    pair_dir = os.path.join(out_dir, "tokenizer_json")
    string_dir = os.path.join(out_dir, "tokenizer_json_string_merges")
    os.makedirs(pair_dir, exist_ok=True)
    os.makedirs(string_dir, exist_ok=True)
    spec = json.loads(tok.to_str())
    assert isinstance(spec["model"]["merges"][0], list), "expected [a, b] merges"
    write_json(os.path.join(pair_dir, "tokenizer.json"), spec)
    spec["model"]["merges"] = [" ".join(pair) for pair in spec["model"]["merges"]]
    assert Tokenizer.from_str(json.dumps(spec)).encode(texts[-1]).ids == cases[-1]["ids"]
    write_json(os.path.join(string_dir, "tokenizer.json"), spec)
    write_json(os.path.join(out_dir, "tokenizer_json_cases.json"),
               {"meta": {"vocab_size": tok.get_vocab_size(with_added_tokens=True)},
                "cases": cases, "decode_cases": decodes})
    return len(cases)


def prompt_cases(reference):
    tasks = [
        "put the black bowl on the plate", "Open the TOP drawer of the cabinet",
        "PICK UP THE ALPHABET SOUP AND PLACE IT IN THE BASKET",
        "turn on the stove and put the moka pot on it", "Put Both Pots On The Stove",
        "stack the 2 blocks", "  spaced   task  ", "move it to (0.3, -0.2)",
        "ÉCRASER LA BOÎTE", "ПОЛОЖИ МИСКУ НА ТАРЕЛКУ", "把碗放在盘子上", "", "ÆØÅ Ünïcödé",
        "ΒΆΛΕ ΤΟ ΜΠΟΛ ΣΤΟ ΠΙΆΤΟ ΤΟΥΣ", "ΟΔΥΣΣΕΥΣ'", "put the ΣΟΦΟΣ bowl on the plate",
        "ΣΑΣ. Σ ΣΣ", "İSTANBUL'DA KUTUYU AÇ", "PUT THE BOWL IN THE DIŞ KUTUİ", "ΑΣ\u0301 ΑΣ\u00adΑ",
    ]
    out = []
    for task in tasks:
        for name, template in [("openvla", OPENVLA_TEMPLATE), ("qwen-chat", QWEN_CHAT_TEMPLATE)]:
            prompt = template.format(task=task.lower())
            ids = reference.encode(prompt, add_special_tokens=False)
            out.append({"format": name, "task": task, "prompt": prompt, "ids": ids})
    return out


# --------------------------------------------------------------------------------------------
# Lower-casing: Python's str.lower() is the oracle for every expected string.

SIGMA = "\u03a3"
# Around a capital sigma: cased letters (Latin, Greek, titlecase, math, Other_Lowercase /
# Other_Uppercase ones such as ª ʰ Ⓐ U+0345), Case_Ignorable ones (apostrophes, soft hyphen,
# combining marks, ZWJ, colon, full stop, modifier letters), neither (digits, space, punctuation),
# U+0130, other sigmas, and code points new in Unicode 15 (U+1E030 modifier letter, U+1E4EC
# combining mark: unassigned in the reference's Unicode 14, so neither Cased nor Case_Ignorable).
SIGMA_BEFORE = [
    "", "A", "a", "\u0391", "\u03c9", "\u0130", "\u01c5", "\U0001d400", "\u00aa", "\u24b6", "\u02b0",
    "\u0345", "\u1d2c", "1", " ", ".", ":", "-", "!", "'", "\u2019", "\u00ad", "\u0301", "\u200d",
    "\u00b7", "^", "A'", "A\u2019", "A\u00ad", "A\u0301", "A\u0301\u0316", "A'\u00ad\u0301", "A\u02b0",
    "A\u0345", "A\u200d", "A:", "A.", "A ", "A1", "A-", "1\u0301", " \u0301", "'\u0301", SIGMA,
    SIGMA * 2, "\u03c3", "\u03c2", "A" + SIGMA + "'", "\U0001e030", "A\U0001e030", "\U0001e4ec",
    "A\U0001e4ec", "\U00010780", "A\U00010780", "\u0378", "A\u0378",
]
SIGMA_AFTER = [
    "", "a", "A", "\u03b1", "\u0130", "\u01c5", "\U0001d41a", "\u00aa", "\u02b0", "\u02b0a", "\u0345",
    "\u0345a", "1", " ", " a", ".", ".a", ":", ":a", "!", "-a", "'", "'a", "'s", "\u2019", "\u2019s",
    "\u00ad", "\u00ada", "\u0301", "\u0301a", "\u0301 ", "\u0301\u0316A", "\u200d", "\u200da", SIGMA,
    SIGMA + "A", "'" + SIGMA, "\u03c3", "\U0001e030", "\U0001e030a", "\U0001e4ec", "\U0001e4eca",
    "\U00010780", "\U00010780a", "\u0378", "\u0378a",
]
SIGMA_WORDS = [
    "ΟΔΥΣΣΕΥΣ", "ΟΔΥΣΣΕΥΣ.", "ΟΔΥΣΣΕΥΣ'", "ΣΟΦΟΣ ΣΟΦΟΣ", "ΣΑΣ ΣΑΣ ΣΑΣ", "ΑΣ1Σ", "Σ1", "1Σ",
    "ΜΑΣΚΑΣ", "Η ΜΠΑΛΑ ΣΤΟ ΚΟΥΤΙ ΤΟΥΣ", "ΆΣ", "ΑΣ\u0301", "Α\u0301Σ", "ΑΣΣΣ", "ΣΣΣ", "Σ Σ Σ",
    "İΣ", "İΣİ", "İ\u0307Σ", "ΑΣ\U0001e030", "ΑΣ\U0001e030Α", "\u1f88Σ", "ΣΑΣ-ΣΑΣ", "«ΑΣ»",
    "Ω\u03a3\u2126\u03a3", "\u212aΣ", "ΣΑΣ\u00adΣΑΣ",
]


def lowercase_cases(rng):
    """Groups of [text, text.lower()] ([text] when unchanged), all measured with str.lower()."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    mapped = [c for c in cps if chr(c).lower() != chr(c)]
    groups = {}
    groups["mapped"] = [chr(c) for c in mapped]
    groups["mapped_in_context"] = [
        f"ab{chr(c)}CD{chr(c)}{chr(c)}\u0301 {chr(c)}. x{chr(c)}\u00ad{SIGMA} {SIGMA}{chr(c)}"
        for c in mapped]
    sigma = [f"{b}{SIGMA}{a}" for b in SIGMA_BEFORE for a in SIGMA_AFTER]
    sigma += SIGMA_WORDS
    pieces = SIGMA_BEFORE + SIGMA_AFTER + [SIGMA] * 20
    sigma += ["".join(rng.choice(pieces) for _ in range(rng.randint(2, 10))) for _ in range(600)]
    groups["final_sigma"] = sigma
    # The properties of every code point that is not Lo, Co or unassigned in this Unicode version,
    # a sample of those, and the code points new in Unicode 15/16 (VERSION_SENSITIVE; the ends of
    # long ranges), where utf8proc's Unicode 15 properties would differ, before a
    # sigma, between a cased letter and a sigma, and after a sigma.
    props = [c for c in cps if unicodedata.category(chr(c)) not in ("Lo", "Co", "Cn")]
    props += [c for c in cps if unicodedata.category(chr(c)) in ("Lo", "Co", "Cn")][::499]
    for first, last in VERSION_SENSITIVE:
        new = list(range(first, last + 1))
        props += new if len(new) <= 96 else new[:64] + new[-32:]
    props = sorted(set(props))
    groups["properties"] = [
        f"{chr(c)}{SIGMA} A{chr(c)}{SIGMA} A{SIGMA}{chr(c)} A{SIGMA}{chr(c)}a" for c in props]
    # Every code point, 256 at a time.
    groups["sweep"] = ["".join(chr(c) for c in cps[i:i + 256]) for i in range(0, len(cps), 256)]
    out = {}
    for name, texts in groups.items():
        out[name] = [[t, t.lower()] if t.lower() != t else [t] for t in texts]
    meta = {"python": sys.version.split()[0], "unidata_version": unicodedata.unidata_version,
            "mapped_code_points": len(mapped), "property_code_points": len(props)}
    return {"meta": meta, "groups": out}


def check_lower_tables():
    """src/text/unicode_lower.inc must be what this Python's str.lower() gives."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                          "scripts", "gen_unicode_lower.py")
    subprocess.run([sys.executable, os.path.normpath(script), "--check"], check=True)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    assets = sys.argv[2] if len(sys.argv) == 3 else os.environ.get("FOCUSVLA_ASSETS")
    if not assets:
        sys.exit("gen_text.py: give ASSETS_DIR or set FOCUSVLA_ASSETS")
    if os.path.basename(os.path.normpath(out_dir)) != "text":
        out_dir = os.path.join(out_dir, "text")
    os.makedirs(out_dir, exist_ok=True)
    asset_dir = os.path.join(assets, "qwen2.5-tokenizer")

    check_lower_tables()
    lower = lowercase_cases(random.Random(SEED))
    with open(os.path.join(out_dir, "lowercase_cases.json"), "w", encoding="utf-8") as f:
        json.dump(lower, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    lower_count = sum(len(cases) for cases in lower["groups"].values())

    reference = load_reference(asset_dir)
    independent = build_independent(asset_dir)
    rng = random.Random(SEED)
    texts = fixed_cases() + version_sensitive_cases() + sweep_cases() + random_cases(rng)
    cases = encode_cases(reference, independent, texts)
    meta = {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "pattern": QWEN2_PATTERN,
        "vocab_size": len(reference),
        "seed": SEED,
    }
    write_json(os.path.join(out_dir, "tokenizer_cases.json"),
               {"meta": meta, "cases": cases, "decode_cases": decode_cases(reference, rng)})
    variant_count = tokenizer_json_variant(reference, out_dir)
    prompts = prompt_cases(reference)
    write_json(os.path.join(out_dir, "prompt_cases.json"), prompts)
    print(f"{len(cases)} tokenizer cases, {variant_count} tokenizer.json cases, "
          f"{len(prompts)} prompt cases, {lower_count} lowercase cases -> {out_dir}")


if __name__ == "__main__":
    main()
