"""focusvla.Policy's serving options (pytest, run by ctest's python_package): batch buckets, the
warm-up and the shape cache, against the reference actions of the policy test group
(FOCUSVLA_TEST_DATA/policy, as test_python_package.py) and the settings the C++ library reports."""

import pytest

import focusvla
from test_python_package import (TOLERANCE, cases, expect_error, load_case, observation,  # noqa: F401
                                 relative_error, tensors)


def test_batch_buckets_pad_calls_and_keep_each_observations_actions(cases, tensors):
    c = cases["focus_openvla"]
    policy = load_case(c, batch_buckets=[4, 2, 2], max_cached_shapes=3)
    assert policy.settings["batch_buckets"] == [2, 4], policy.settings
    obs = [observation(o, tensors) for o in c["observations"]]
    for which in ([1], [0, 1, 2], [3, 2, 1, 0, 3]):  # run at 2, 4 and 5 (no bucket holds 5)
        got = policy.act_batch([obs[i] for i in which])
        for actions, i in zip(got, which):
            assert relative_error(actions, tensors[f"{c['observations'][i]['key']}.actions"]) <= TOLERANCE
    assert policy.cached_shapes == 3  # three shapes made, within max_cached_shapes
    assert load_case(c).settings["batch_buckets"] == []  # the CPU's default: no padding
    expect_error(lambda: load_case(c, batch_buckets=[0]), "PolicyOptions::batch_buckets", "entry 0")
    expect_error(lambda: load_case(c, max_cached_shapes=0), "PolicyOptions::max_cached_shapes")
    with pytest.raises(TypeError):
        load_case(c, batch_buckets="1,2")


def test_warm_up_caches_the_buckets(cases, tensors):
    c = cases["focus_openvla"]
    policy = load_case(c, batch_buckets=[1, 2])
    images, instruction, proprio = observation(c["observations"][0], tensors)
    assert policy.cached_shapes == 0
    assert policy.warm_up(instruction) > 0
    assert policy.cached_shapes == 2
    actions = policy.act(images, instruction, proprio)
    assert policy.cached_shapes == 2  # the warmed batch-1 shape
    assert relative_error(actions, tensors[f"{c['observations'][0]['key']}.actions"]) <= TOLERANCE
    expect_error(lambda: policy.warm_up(" "), "instruction", "is empty")
    expect_error(lambda: policy.warm_up(instruction, 3), "got 3 camera", "takes 2")
