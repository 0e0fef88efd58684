"""The Python package focusvla (pytest), run by ctest's python_package through
tests/python/run_python_package.sh: the installed wheel against the C++ reference actions of the
policy test group (FOCUSVLA_TEST_DATA/policy: cases.json, tensors.safetensors, the checkpoints)."""

import gc
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import focusvla

DATA = Path(os.environ.get("FOCUSVLA_TEST_DATA", "build/test_data")) / "policy"
TOLERANCE = 1e-4  # as tests/policy/test_policy.cpp


@pytest.fixture(scope="module")
def cases():
    return {c["name"]: c for c in json.loads((DATA / "cases.json").read_text())}


@pytest.fixture(scope="module")
def tensors():
    return load_file(str(DATA / "tensors.safetensors"))


def options_for(c):
    """Every setting the case was computed with, explicit (test_policy.cpp's options_for)."""
    return dict(dtype=c["dtype"], cpu_bf16_matmul="native", unnorm_key=c["unnorm_key"],
                prompt_format=c["prompt_format"], center_crop=c.get("center_crop", False),
                jpeg_roundtrip=c.get("jpeg_roundtrip", True))


def observation(o, tensors):
    images = [tensors[f"{o['key']}.image{i}"] for i in range(o["cameras"])]
    return images, o["instruction"], (o["proprio"] or None)


def relative_error(got, expected):
    assert got.shape == expected.shape
    assert np.isfinite(got).all()
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))


def load_case(c, **overrides):
    return focusvla.Policy.load(str(DATA / c["checkpoint"]), **{**options_for(c), **overrides})


def test_installed_package_is_the_wheel():
    prefix = os.environ.get("FOCUSVLA_EXPECT_PREFIX")
    if prefix:
        assert Path(focusvla.__file__).resolve().is_relative_to(Path(prefix).resolve()), focusvla.__file__


FP32_CASES = ["focus_openvla", "focus_qwen_chat", "pro_1cam_noproprio", "pro_1cam_qwen_chat", "base_openvla",
              "focus_bf16_as_f32", "pro_bf16_as_f32"]


@pytest.mark.parametrize("name", FP32_CASES)
def test_act_equals_reference(name, cases, tensors):
    c = cases[name]
    policy = load_case(c)
    assert policy.settings["dtype"] == "float32"
    for o in c["observations"]:
        images, instruction, proprio = observation(o, tensors)
        actions = policy.act(images, instruction, proprio)
        assert actions.dtype == np.float64
        assert actions.shape == (policy.chunk_size, policy.action_dim)
        assert relative_error(actions, tensors[o["key"] + ".actions"]) <= TOLERANCE, o["key"]


def test_defaults_reproduce_the_evaluation(cases, tensors):
    c = cases["focus_libero_eval"]
    assert c["defaults"]
    policy = focusvla.Policy.load(str(DATA / c["checkpoint"]), unnorm_key=c["unnorm_key"])
    s = policy.settings
    assert s["prompt_format"] == "qwen-chat" and s["center_crop"] is True
    for o in c["observations"]:
        images, instruction, proprio = observation(o, tensors)
        actions = policy.act(images, instruction, proprio)
        # The checkpoint is fp32 (the defaults keep it); bf16-native CPUs change nothing here.
        assert relative_error(actions, tensors[o["key"] + ".actions"]) <= TOLERANCE, o["key"]


def test_libero_256_frames_with_and_without_jpeg(cases, tensors):
    """256x256 cameras: the defaults run the reference's JPEG round trip before the LIBERO resize,
    jpeg_roundtrip=False the resize alone; both equal the reference's (TensorFlow) pipeline."""
    if "focus_libero_eval_256" not in cases:
        pytest.skip("no 256x256 LIBERO cases (gen_policy.py without tensorflow)")
    for name, kwargs in (("focus_libero_eval_256", {}), ("focus_libero_256_no_jpeg", {"jpeg_roundtrip": False})):
        c = cases[name]
        policy = focusvla.Policy.load(str(DATA / c["checkpoint"]), unnorm_key=c["unnorm_key"], **kwargs)
        assert policy.settings["jpeg_roundtrip"] is c["jpeg_roundtrip"]
        for o in c["observations"]:
            images, instruction, proprio = observation(o, tensors)
            assert relative_error(policy.act(images, instruction, proprio), tensors[o["key"] + ".actions"]) <= TOLERANCE


@pytest.fixture(scope="module")
def focus(cases):
    return load_case(cases["focus_openvla"], diagnostics=True)


def test_properties_prompt_and_info(focus, cases, tensors):
    assert (focus.num_images, focus.chunk_size, focus.action_dim, focus.proprio_dim) == (2, 8, 7, 8)
    assert focus.head_kind == "focusvla"
    s = focus.settings
    assert s["head"] == "focusvla" and s["prompt_format"] == "openvla" and s["prompt_format_source"] == "option"
    assert s["dtype"] == "float32" and s["device"] == "cpu" and s["unnorm_key"] == "libero_spatial_no_noops"
    text, ids = focus.prompt("put the bowl on the plate")
    assert text == "In: What action should the robot take to put the bowl on the plate?\nOut:"
    assert ids and all(isinstance(i, int) for i in ids)

    o = cases["focus_openvla"]["observations"][0]
    images, instruction, proprio = observation(o, tensors)
    actions, info = focus.act(images, instruction, proprio, return_info=True)
    assert relative_error(actions, tensors[o["key"] + ".actions"]) <= TOLERANCE
    assert set(info) >= {"timing", "normalized", "settings", "kept_indices", "gates"}
    # The stage times under the names and in the order of every front end (timing_fields in policy.h).
    assert list(info["timing"]) == ["preprocess_ms", "vision_ms", "projector_ms", "llm_ms", "head_ms", "device_ms",
                                    "total_ms", "cuda_graph"], list(info["timing"])
    assert info["timing"]["total_ms"] > 0 and info["timing"]["cuda_graph"] is False
    assert info["normalized"].shape == (8, 7)
    assert info["settings"] == s
    assert info["kept_indices"] and all(isinstance(k, np.ndarray) for k in info["kept_indices"])
    assert len(info["gates"]) == len(info["kept_indices"])
    assert info["kept_indices"][0].dtype == np.int64


def test_act_batch_equals_act(focus, cases, tensors):
    obs = [observation(o, tensors) for o in cases["focus_openvla"]["observations"]]
    singles = [focus.act(*ob) for ob in obs]
    as_dicts = focus.act_batch([{"images": i, "instruction": t, "proprio": p} for i, t, p in obs])
    as_tuples = focus.act_batch([tuple(ob) for ob in obs])
    assert len(as_dicts) == len(obs) == len(as_tuples)
    for single, a, b in zip(singles, as_dicts, as_tuples):
        assert relative_error(a, single) <= TOLERANCE
        assert relative_error(b, single) <= TOLERANCE
    with_info = focus.act_batch([tuple(ob) for ob in obs[:2]], return_info=True)
    for (actions, info), single in zip(with_info, singles):
        assert relative_error(actions, single) <= TOLERANCE
        assert info["normalized"].shape == (8, 7) and info["timing"]["total_ms"] > 0


def test_act_batch_isolate_errors(focus, cases, tensors):
    """One bad observation raises for the whole batch; with isolate_errors the others get their own
    actions (the batch fails, each then runs alone) and its entry is the exception, returned."""
    obs = [observation(o, tensors) for o in cases["focus_openvla"]["observations"]]
    images, instruction, proprio = obs[0]
    refused = (images, instruction, np.full(len(proprio), np.nan))  # the policy refuses NaN proprio
    batch = [tuple(obs[0]), refused, 42, tuple(obs[1])]
    expect_error(lambda: focus.act_batch(batch), "observations[2]", kind=TypeError)
    expect_error(lambda: focus.act_batch([tuple(obs[0]), refused]), "proprio")
    out = focus.act_batch(batch, isolate_errors=True)
    assert len(out) == 4
    assert isinstance(out[1], focusvla.Error) and "proprio" in str(out[1]), out[1]
    assert isinstance(out[2], TypeError) and "observations[2]" in str(out[2]), out[2]
    for k, single in ((0, focus.act(*obs[0])), (3, focus.act(*obs[1]))):
        assert isinstance(out[k], np.ndarray) and relative_error(out[k], single) <= TOLERANCE
    good = focus.act_batch([tuple(ob) for ob in obs[:2]], return_info=True, isolate_errors=True)
    assert all(isinstance(r, tuple) and r[1]["timing"]["total_ms"] > 0 for r in good)

    class Odd(tuple):  # an item whose own Python code raises while it is read
        def __len__(self):
            raise ValueError("Odd has no length")

    expect_error(lambda: focus.act_batch([tuple(obs[0]), Odd(obs[0])]), "Odd has no length", kind=ValueError)
    out = focus.act_batch([tuple(obs[0]), Odd(obs[0])], isolate_errors=True)
    assert isinstance(out[0], np.ndarray)
    assert isinstance(out[1], ValueError) and "Odd has no length" in str(out[1]), out[1]


def test_text_without_utf8_is_a_named_error(focus, cases, tensors):
    """A str with a lone surrogate (what os.fsdecode makes of a non-UTF-8 file name) has no UTF-8
    form: a TypeError naming the argument, for that observation only, never a std::bad_cast that
    fails the whole batch."""
    images, instruction, proprio = observation(cases["focus_openvla"]["observations"][0], tensors)
    surrogate = "pick \udcff up"
    expect_error(lambda: focus.act(images, surrogate, proprio), "instruction", "UTF-8", kind=TypeError)
    out = focus.act_batch([(images, instruction, proprio), (images, surrogate, proprio),
                           {"images": images, "instruction": instruction, "\udcff": 1}], isolate_errors=True)
    assert isinstance(out[0], np.ndarray)
    assert isinstance(out[1], TypeError) and "instruction" in str(out[1]) and "UTF-8" in str(out[1]), out[1]
    assert isinstance(out[2], TypeError) and "unknown key '\\udcff'" in str(out[2]), out[2]
    expect_error(lambda: load_case(cases["focus_openvla"], dtype="bf\udcff16"), "dtype", "UTF-8", kind=TypeError)


def test_numpy_torch_and_strided_inputs(focus, cases, tensors):
    o = cases["focus_openvla"]["observations"][1]
    images, instruction, proprio = observation(o, tensors)
    expected = focus.act(images, instruction, proprio)
    # torch uint8 tensors (zero copy) and a torch proprio.
    as_torch = focus.act([torch.from_numpy(i) for i in images], instruction, torch.tensor(proprio, dtype=torch.float64))
    np.testing.assert_array_equal(as_torch, expected)
    # Proprio as a numpy array, images as a tuple.
    np.testing.assert_array_equal(focus.act(tuple(images), instruction, np.asarray(proprio)), expected)
    # Non-contiguous views (negative strides, a channel-last slice of a wider array, a transposed
    # torch tensor) give what their contiguous copies give.
    flipped = [i[:, ::-1] for i in images]
    np.testing.assert_array_equal(focus.act(flipped, instruction, proprio),
                                  focus.act([np.ascontiguousarray(f) for f in flipped], instruction, proprio))
    padded = [np.concatenate([i, i[..., :1]], axis=2)[..., :3] for i in images]
    assert not padded[0].flags.c_contiguous
    np.testing.assert_array_equal(focus.act(padded, instruction, proprio), expected)
    transposed = [torch.from_numpy(np.ascontiguousarray(i.transpose(1, 0, 2))).transpose(0, 1) for i in images]
    assert not transposed[0].is_contiguous()
    np.testing.assert_array_equal(focus.act(transposed, instruction, proprio), expected)


def test_threads_four_policies_or_one_shared(cases, tensors):
    c = cases["pro_1cam_noproprio"]
    obs = [observation(o, tensors) for o in c["observations"]]
    expected = [tensors[o["key"] + ".actions"] for o in c["observations"]]
    shared = load_case(c)
    for policies in ([load_case(c) for _ in range(4)], [shared] * 4):
        errors, results = [], [None] * 4

        def run(k, policy):
            try:
                results[k] = [policy.act(*obs[(k + r) % 4]) for r in range(2)]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(k, p)) for k, p in enumerate(policies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for k in range(4):
            for r in range(2):
                assert relative_error(results[k][r], expected[(k + r) % 4]) <= TOLERANCE


def test_act_releases_the_gil(cases, tensors):
    """While act runs in a thread, this thread keeps running Python: with the GIL held through each
    ~10 ms act, the loop below would stall for whole calls."""
    import sys

    c = cases["pro_1cam_noproprio"]
    policy = load_case(c)
    images, instruction, proprio = observation(c["observations"][0], tensors)
    policy.act(images, instruction, proprio)
    done = threading.Event()

    def work():
        for _ in range(20):
            policy.act(images, instruction, proprio)
        done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        worker = threading.Thread(target=work)
        start = last = time.perf_counter()
        stalled = 0.0
        worker.start()
        while not done.is_set():
            now = time.perf_counter()
            if now - last > 2e-3:
                stalled += now - last
            last = now
        total = time.perf_counter() - start
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert stalled < 0.5 * total, f"this thread stalled {stalled:.3f} s of {total:.3f} s"


def expect_error(fn, *fragments, kind=focusvla.Error):
    with pytest.raises(kind) as e:
        fn()
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_bad_inputs(focus, cases, tensors):
    assert issubclass(focusvla.Error, RuntimeError)
    o = cases["focus_openvla"]["observations"][0]
    images, instruction, proprio = observation(o, tensors)
    expect_error(lambda: focus.act([images[0].astype(np.float32), images[1]], instruction, proprio), "uint8")
    expect_error(lambda: focus.act([images[0][..., :1], images[1]], instruction, proprio), "channel")
    expect_error(lambda: focus.act([images[0]], instruction, proprio), "images", "got 1 camera", "takes 2")
    nan = list(proprio)
    nan[3] = float("nan")
    expect_error(lambda: focus.act(images, instruction, nan), "proprio", "value 3", "not finite")
    expect_error(lambda: focus.act(images, instruction, proprio[:2]), "proprio", "has 2 values", "takes 8")
    expect_error(lambda: focus.act(images, "   ", proprio), "instruction", "empty")
    expect_error(lambda: focus.act_batch([]), "no observations")
    # Wrong Python types: TypeError naming the argument.
    expect_error(lambda: focus.act(images[0], instruction, proprio), "images", kind=TypeError)
    expect_error(lambda: focus.act(["not an image", images[1]], instruction, proprio), "images[0]", kind=TypeError)
    expect_error(lambda: focus.act(images, 42, proprio), "instruction", kind=TypeError)
    expect_error(lambda: focus.act(images, instruction, "0.1,0.2"), "proprio", kind=TypeError)
    expect_error(lambda: focus.act_batch([42]), "observations[0]", kind=TypeError)
    expect_error(lambda: focus.act_batch([{"images": images}]), "instruction", kind=TypeError)
    # The policy still works.
    assert relative_error(focus.act(images, instruction, proprio), tensors[o["key"] + ".actions"]) <= TOLERANCE


def test_load_errors(cases):
    c = cases["focus_openvla"]
    expect_error(lambda: focusvla.Policy.load(str(DATA / "no_such_checkpoint")), "no_such_checkpoint")
    expect_error(lambda: load_case(c, unnorm_key="no_such_dataset"), "unnorm_key 'no_such_dataset'", "choose one of")
    expect_error(lambda: load_case(c, dtype="int8"), "dtype")
    expect_error(lambda: load_case(c, cpu_bf16_matmul="fast"), "cpu_bf16_matmul")
    expect_error(lambda: load_case(c, device="tpu"), "device")


def test_released_config_without_num_images_in_input(cases, tensors, tmp_path):
    """The released VLA-Adapter config.json has no num_images_in_input: Policy.load(path,
    unnorm_key=...) loads it, num_images is 0 and each call's image count is the camera count."""
    c = cases["focus_openvla"]
    released = tmp_path / "released"
    released.mkdir()
    for f in (DATA / c["checkpoint"]).iterdir():
        if f.is_file():
            (released / f.name).symlink_to(f.resolve())
    config = json.loads((DATA / c["checkpoint"] / "config.json").read_text())
    del config["num_images_in_input"]
    (released / "config.json").unlink()
    (released / "config.json").write_text(json.dumps(config))

    policy = focusvla.Policy.load(str(released), unnorm_key=c["unnorm_key"])
    assert policy.num_images == 0 and policy.settings["cameras"] == 0
    policy = focusvla.Policy.load(str(released), **options_for(c))
    obs = [observation(o, tensors) for o in c["observations"]]
    for o, (images, instruction, proprio) in zip(c["observations"], obs):
        assert relative_error(policy.act(images, instruction, proprio), tensors[o["key"] + ".actions"]) <= TOLERANCE
    images, instruction, proprio = obs[0]
    assert np.isfinite(policy.act(images[:1], instruction, proprio)).all()  # one camera: another call shape
    expect_error(lambda: policy.act_batch([{"images": images, "instruction": instruction, "proprio": proprio},
                                           {"images": images[:1], "instruction": instruction, "proprio": proprio}]),
                 "observation 1: images", "observation 0 of this act_batch has 2")
    fixed = focusvla.Policy.load(str(released), num_images=2, **options_for(c))
    assert fixed.num_images == 2
    expect_error(lambda: fixed.act(images[:1], instruction, proprio), "takes 2", "PolicyOptions::num_images")


def test_executor_ensemble_m_range():
    """ensemble_m outside [-10, 10] is refused by name (exp(-m * i) would overflow)."""
    chunk = np.zeros((8, 7))
    for m in (-1000.0, 10.5, float("nan")):
        expect_error(lambda: focusvla.ChunkExecutor(lambda i, t, p: chunk, mode="ensemble", ensemble_m=m),
                     "ExecutorOptions.ensemble_m")
    for m in (-10.0, 10.0):
        focusvla.ChunkExecutor(lambda i, t, p: chunk, mode="ensemble", ensemble_m=m).close()


def test_set_tap(cases, tensors):
    c = cases["pro_1cam_noproprio"]
    policy = load_case(c)
    seen = {}
    policy.set_tap(lambda name, value: seen.setdefault(name, value))
    images, instruction, proprio = observation(c["observations"][0], tensors)
    policy.act(images, instruction, proprio)
    assert "llm.norm" in seen and isinstance(seen["llm.norm"], np.ndarray)
    policy.set_tap(None)
    seen.clear()
    policy.act(images, instruction, proprio)
    assert not seen


def test_explain_equals_the_reference(tensors):
    """Policy.explain: the kept-patch map, the gates and the reliance test of the LIBERO sample are
    the Python reference's (explain_oracle.py), and the verdicts separate a checkpoint whose
    visual branch is switched off from a normal one."""
    explain_cases = {c["name"]: c for c in json.loads((DATA / "explain_cases.json").read_text())}
    for name, level in (("explain_focus", "uses-vision"), ("focus_gate_off", "none")):
        c = explain_cases[name]
        policy = focusvla.Policy.load(str(DATA / c["checkpoint"]), unnorm_key=c["unnorm_key"], dtype="float32",
                                      prompt_format=c["prompt_format"], center_crop=c["center_crop"])
        images = [tensors[f"{c['images']}.image{i}"] for i in range(c["cameras"])]
        e = policy.explain(images, c["instruction"], np.asarray(c["proprio"]))
        assert e["head"] == "focusvla" and e["verdict"]["level"] == level, e["verdict"]
        grids = np.array([cam["grid"] for cam in e["kept"]["cameras"]])
        assert grids.shape == (2, 16, 16)
        assert np.abs(grids - np.array(c["kept"]["grids"])).max() <= 1e-12
        assert [g["mean"] for g in e["gates"]] == pytest.approx([b["gate"]["mean"] for b in c["blocks"]], abs=1e-9)
        assert [a["name"] for a in e["ablations"]] == [a["name"] for a in c["ablations"]]
        for got, want in zip(e["ablations"], c["ablations"]):
            assert got["mean_distance"] == pytest.approx(want["mean_distance"], abs=1e-6), got["name"]
        # The diagnostics left the policy as it was.
        assert relative_error(policy.act(images, c["instruction"], c["proprio"]), np.array(c["actions"])) <= TOLERANCE
    quick = policy.explain(images, c["instruction"], c["proprio"], reliance=False, per_block=True)
    assert quick["ablations"] == [] and quick["verdict"]["level"] == "not-run"
    assert len(quick["kept_per_block"]) == len(c["blocks"])
    expect_error(lambda: policy.explain(images[:1], c["instruction"], c["proprio"]), "images", "takes 2")
    expect_error(lambda: policy.explain(images, 3), kind=TypeError)


def test_quantize_int8_and_the_focus_audit(cases, tensors):
    """Policy.load(quantize="int8"): settings say what is quantized; the actions equal the C++
    library's (PolicyQuantize tests check them against the reference); compare_quantize returns the
    audit; a bad value is a named error."""
    c = cases["focus_openvla"]
    images, instruction, proprio = observation(c["observations"][0], tensors)
    plain = load_case(c)
    policy = load_case(c, quantize="int8")
    s = policy.settings
    assert s["quantize"] == "int8" and s["quantized_layers"] > 0 and "W8A8" in s["quantize_detail"], s
    assert plain.settings["quantize"] == "none"
    got = policy.act(images, instruction, proprio)
    assert np.isfinite(got).all()
    # Against the reference's fp32 actions, by the rule of the C++ tests (PolicyQuantize.Tiny*):
    # the bf16 checkpoint through int8, within 4x the reference's own bf16 distance from fp32.
    b = cases["focus_bf16"]
    bimages, binstruction, bproprio = observation(b["observations"][0], tensors)
    fp32 = np.asarray(tensors["focus_bf16_as_f32.0.actions"])
    reference = relative_error(np.asarray(tensors["focus_bf16.0.actions"], dtype=np.float64), fp32)
    q = load_case(b, quantize="int8", cpu_bf16_matmul="auto")
    assert relative_error(q.act(bimages, binstruction, bproprio), fp32) <= 4 * reference
    audit = plain.compare_quantize(policy, images, instruction, proprio)
    assert audit["quantized_quantize"] == "int8" and audit["reference_quantize"] == "none"
    assert len(audit["blocks"]) > 0
    assert all(0.0 <= b["kept_jaccard_mean"] <= 1.0 for b in audit["blocks"])
    assert np.abs(np.asarray(audit["quantized_actions"]) - got).max() == 0.0
    expect_error(lambda: load_case(c, quantize="int4"), "quantize", "int4", "none, int8 or fp8")
    expect_error(lambda: load_case(c, quantize="fp8"), "fp8", "CUDA")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_thousand_calls_flat_memory(cases, tensors):
    c = cases["pro_1cam_noproprio"]
    policy = load_case(c, threads=1)
    obs = [observation(o, tensors) for o in c["observations"]]
    images = [[torch.from_numpy(i) for i in ob[0]] for ob in obs]
    rss = {}
    for k in range(1, 1001):
        ob = obs[k % 4]
        if k % 2:
            actions, info = policy.act(ob[0], ob[1], ob[2], return_info=True)
        else:
            actions = policy.act(images[k % 4], ob[1], ob[2])
        if k in (100, 1000):
            gc.collect()
            rss[k] = rss_bytes()
    growth = rss[1000] - rss[100]
    print(f"RSS after 100 calls {rss[100] / 2**20:.1f} MiB, after 1000 {rss[1000] / 2**20:.1f} MiB")
    # A leak of one 8x7 float64 result per call would be 450 KB over 900 calls; of one image, 140 MB.
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 900 calls"


def test_torch_version_check():
    from focusvla import _check_torch_version

    _check_torch_version("2.11.0+cu130", "2.11.0+cu130")
    with pytest.raises(ImportError) as e:
        _check_torch_version("2.10.0+cpu", "2.11.0+cu130")
    assert "2.10.0+cpu" in str(e.value) and "2.11.0+cu130" in str(e.value)
    from focusvla import _build_info

    assert focusvla._core.__torch_version__ == _build_info.TORCH_VERSION == torch.__version__


# --- focusvla.ChunkExecutor -------------------------------------------------------------------


def act_temporal_agg(chunks, k=0.01):
    """ACT's evaluation loop with --temporal_agg (tonyzhaozh/act imitate_episodes.py), in numpy:
    chunk t is written to all_time_actions[t, t:t+num_queries]; the action of step t averages the
    populated rows of all_time_actions[:, t] (ACT: all(!= 0)), weights exp(-k * i), oldest first."""
    steps, queries, dim = len(chunks), chunks[0].shape[0], chunks[0].shape[1]
    all_time_actions = np.zeros([steps, steps + queries, dim])
    out = []
    for t in range(steps):
        all_time_actions[[t], t:t + queries] = chunks[t]
        actions_for_curr_step = all_time_actions[:, t]
        actions_populated = np.all(actions_for_curr_step != 0, axis=1)
        actions_for_curr_step = actions_for_curr_step[actions_populated]
        exp_weights = np.exp(-k * np.arange(len(actions_for_curr_step)))
        exp_weights = exp_weights / exp_weights.sum()
        out.append((actions_for_curr_step * exp_weights[:, None]).sum(axis=0))
    return out


def lerobot_temporal_ensemble(chunks, coeff=0.01):
    """LeRobot's ACTTemporalEnsembler.update (policies/act/modeling_act.py), the online form of the
    same average, in numpy: a running weighted mean per future step with the count of its terms."""
    weights = np.exp(-coeff * np.arange(len(chunks[0])))
    cumsum = np.cumsum(weights)
    average = count = None
    out = []
    for actions in chunks:
        if average is None:
            average, count = actions.copy(), np.ones((len(actions), 1), dtype=np.int64)
        else:
            average = (average * cumsum[count - 1] + actions[:-1] * weights[count]) / cumsum[count]
            count = np.minimum(count + 1, len(weights))
            average = np.concatenate([average, actions[-1:]])
            count = np.concatenate([count, np.ones_like(count[-1:])])
        out.append(average[0])
        average, count = average[1:], count[1:]
    return out


def scripted(chunks):
    """A policy callable that returns chunks[tick], the tick travelling in proprio[0]."""
    return lambda images, instruction, proprio: chunks[int(proprio[0])]


def test_executor_ensemble_matches_act_and_lerobot():
    rng = np.random.default_rng(3)
    chunks = [rng.uniform(-1, 1, size=(8, 7)) for _ in range(30)]
    executor = focusvla.ChunkExecutor(scripted(chunks), mode="ensemble", clock=focusvla.SimulatedClock())
    got = [executor.tick([], "stack the blocks", [t]) for t in range(30)]
    for t, (ours, act, lerobot) in enumerate(zip(got, act_temporal_agg(chunks), lerobot_temporal_ensemble(chunks))):
        assert ours.shape == (7,) and ours.dtype == np.float64
        assert np.abs(ours - act).max() <= 1e-12, t
        assert np.abs(ours - lerobot).max() <= 1e-12, t
    assert executor.last_tick()["predictions"] == 8
    assert executor.metrics()["inferences"] == 30


def test_executor_keeps_predictions_act_drops():
    """A prediction with an exact 0 (a gripper command) is silently dropped by ACT's all(!= 0) mask;
    LeRobot's ensembler and the executor keep it."""
    chunks = [np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([[0.0, 4.0], [5.0, 5.0]])]
    executor = focusvla.ChunkExecutor(scripted(chunks), mode="ensemble", clock=focusvla.SimulatedClock())
    got = [executor.tick([], "stack the blocks", [t]) for t in range(2)]
    np.testing.assert_allclose(got[1], lerobot_temporal_ensemble(chunks)[1], rtol=0, atol=1e-12)
    assert np.abs(got[1] - act_temporal_agg(chunks)[1]).max() > 0.5  # ACT's loop: (2, 2) alone


def test_executor_modes_with_a_policy(focus, cases, tensors):
    """Each mode against Policy.act on the same observations (the tick in proprio[0] + offset)."""
    images, instruction, proprio = observation(cases["focus_openvla"]["observations"][0], tensors)

    def state(t):
        return [proprio[0] + 0.01 * t] + list(proprio[1:])

    expected = {t: focus.act(images, instruction, state(t)) for t in (0, 1, 3)}

    with focusvla.ChunkExecutor(focus, mode="open-loop", clock=focusvla.SimulatedClock()) as executor:
        for t in range(3):
            np.testing.assert_allclose(executor.tick(images, instruction, state(t)), expected[0][t], rtol=0, atol=1e-6)
        assert executor.last_tick()["source_tick"] == 0

    # async, threshold 4: tick 3 hands its observation over; it lands at tick 4 with row 0 stale.
    clock = focusvla.SimulatedClock()
    with focusvla.ChunkExecutor(focus, mode="async", threshold=4, clock=clock) as executor:
        for t in range(4):
            clock.set(0.05 * t)
            np.testing.assert_allclose(executor.tick(images, instruction, state(t)), expected[0][t], rtol=0, atol=1e-6)
        assert executor.last_tick()["inference_started"]
        assert executor.wait_for_inference(60.0)
        clock.set(0.2)
        np.testing.assert_allclose(executor.tick(images, instruction, state(4)), expected[3][1], rtol=0, atol=1e-6)
        r = executor.last_tick()
        assert r["chunk_landed"] and r["landed_from_tick"] == 3 and r["dropped_steps"] == 1 and r["merged_steps"] == 4
        assert executor.options["mode"] == "async" and executor.options["aggregate"] == "replace"

    with focusvla.ChunkExecutor(focus, mode="ensemble", ensemble_m=0.5, clock=focusvla.SimulatedClock()) as executor:
        executor.tick(images, instruction, state(0))
        w = np.exp(-0.5)
        np.testing.assert_allclose(executor.tick(images, instruction, state(1)),
                                   (expected[0][1] + w * expected[1][0]) / (1 + w), rtol=0, atol=1e-6)


def test_executor_errors_surface():
    chunks = [np.full((8, 7), float(t + 1)) for t in range(10)]

    def failing(images, instruction, proprio):
        if int(proprio[0]) == 3:
            raise ValueError("scripted policy failed at tick 3")
        return chunks[int(proprio[0])]

    executor = focusvla.ChunkExecutor(failing, mode="async", threshold=4, clock=focusvla.SimulatedClock())
    for t in range(4):
        executor.tick([], "stack the blocks", [t])
    assert executor.wait_for_inference(20.0)
    expect_error(lambda: executor.tick([], "stack the blocks", [4]), "scripted policy failed at tick 3", kind=ValueError)
    assert executor.metrics()["failed_inferences"] == 1
    assert executor.tick([], "stack the blocks", [5])[0] == 1.0  # carries on with the first chunk
    executor.close()
    expect_error(lambda: executor.tick([], "stack the blocks", [6]), "tick() after close()")

    inline = focusvla.ChunkExecutor(lambda i, t, p: np.zeros((8, 6)) if p[0] else np.zeros((8, 7)), mode="open-loop",
                                    execute_steps=1)
    inline.tick([], "x", [0])
    expect_error(lambda: inline.tick([], "x", [1]), "8 x 6 chunk after 8 x 7 ones")
    expect_error(lambda: focusvla.ChunkExecutor(lambda i, t, p: "no", mode="ensemble").tick([], "x", [0]),
                 "policy: the callable must return a (chunk, action_dim) array")
    expect_error(lambda: focusvla.ChunkExecutor(failing, mode="sometimes"), "unknown execution mode 'sometimes'")
    expect_error(lambda: focusvla.ChunkExecutor(failing, hz=0), "ExecutorOptions.hz")
    expect_error(lambda: focusvla.ChunkExecutor(failing, aggregate="max"), "unknown aggregate 'max'")
    expect_error(lambda: focusvla.ChunkExecutor(42), "policy: expected a focusvla.Policy or a callable", kind=TypeError)


def test_executor_close_and_del_with_a_python_policy_in_flight():
    """The worker needs the GIL to finish a Python policy: close() and destruction release it."""
    for how in ("close", "del"):
        started, release = threading.Event(), threading.Event()

        def policy(images, instruction, proprio):
            if proprio[0] > 0:
                started.set()
                release.wait(20.0)
            return np.ones((8, 7))

        executor = focusvla.ChunkExecutor(policy, mode="async", threshold=6)
        executor.tick([], "x", [0])
        executor.tick([], "x", [1])  # 6 left: starts the background call
        assert started.wait(20.0)
        timer = threading.Timer(0.1, release.set)
        timer.start()
        if how == "close":
            executor.close()
            assert not executor.inference_in_flight
            assert executor.metrics()["inferences"] == 1
        else:
            del executor
            gc.collect()
        timer.join()


def test_executor_metrics_with_a_simulated_clock():
    clock = focusvla.SimulatedClock()

    def policy(images, instruction, proprio):
        clock.advance(0.01 * (int(proprio[0]) + 1))  # 10, 20, ..., 100 ms
        return np.ones((8, 7))

    executor = focusvla.ChunkExecutor(policy, mode="open-loop", execute_steps=1, hz=5, clock=clock)
    m = executor.metrics()
    assert m["ticks"] == 0 and np.isnan(m["inference_p50_ms"])
    for t in range(10):
        clock.set(0.2 * t)
        executor.tick([], "x", [t])
    m = executor.metrics()
    assert (m["ticks"], m["inferences"], m["deadline_misses"]) == (10, 10, 0)
    assert abs(m["inference_p50_ms"] - 50) < 1e-9 and abs(m["inference_p99_ms"] - 100) < 1e-9
    assert abs(m["staleness_mean_ms"] - 55) < 1e-9 and m["jitter_max_ms"] < 1e-9
    assert set(m) >= {"held_ticks", "dropped_steps", "merged_steps", "jitter_p50_ms", "staleness_max_ticks"}
