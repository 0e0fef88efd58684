"""The Python package across threads and at interpreter exit (issue 22): nothing that waits for a
policy's or an executor's lock holds the GIL meanwhile, and an executor left with a Python policy in
flight does not hang the interpreter's exit. Each scenario runs in a child interpreter with a time
limit, so a deadlock is a failure with a message, never a hung suite. Shares the fixtures and
helpers of test_python_package.py (same wheel, same test data)."""

import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_python_package import DATA, cases, options_for  # noqa: E402,F401

LIMIT_S = 120  # the scenarios take a few seconds; a deadlock runs into this


def run_child(source, timeout=LIMIT_S):
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the child interpreter did not finish within {timeout} s (deadlock?):\n"
                             f"stdout: {e.stdout}\nstderr: {e.stderr}") from None
    assert done.returncode == 0, f"child exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_tap_and_last_execution_while_another_thread_acts(cases):
    """Thread A acts with a Python tap (which needs the GIL inside the policy's lock); this thread
    keeps calling set_tap and last_execution (which take that lock). Holding the GIL while waiting
    for the lock deadlocks at the first overlap."""
    c = cases["pro_1cam_noproprio"]
    out = run_child(f"""
        import threading, numpy as np, focusvla
        from safetensors.numpy import load_file
        c = {c!r}
        policy = focusvla.Policy.load({str(DATA / c["checkpoint"])!r}, **{options_for(c)!r})
        tensors = load_file({str(DATA / "tensors.safetensors")!r})
        o = c["observations"][0]
        images = [tensors[f"{{o['key']}}.image{{i}}"] for i in range(o["cameras"])]
        seen = []
        tap = lambda name, value: seen.append(name)
        policy.set_tap(tap)
        done = threading.Event()
        def work():
            for _ in range(30):
                policy.act(images, o["instruction"], o["proprio"] or None)
            done.set()
        worker = threading.Thread(target=work)
        worker.start()
        calls = 0
        while not done.is_set():
            policy.set_tap(tap)
            assert policy.last_execution in ("cpu", "none"), policy.last_execution
            calls += 1
        worker.join()
        policy.set_tap(None)
        print(calls, len(seen))
    """)
    calls, taps = map(int, out.split())
    assert calls > 0 and taps > 0, out


def test_executor_metrics_while_ticking_in_another_thread():
    """metrics() and last_tick() from one thread while another ticks an async executor whose
    Python policy runs on the executor's worker (it needs the GIL): no hang, every tick counted."""
    out = run_child("""
        import threading, numpy as np, focusvla
        def policy(images, instruction, proprio):
            return np.full((8, 7), float(proprio[0]))
        executor = focusvla.ChunkExecutor(policy, mode="async", threshold=6, metrics_window=100000)
        done = threading.Event()
        def work():
            for t in range(400):
                executor.tick([], "x", [t])
            done.set()
        worker = threading.Thread(target=work)
        worker.start()
        reads = 0
        while reads == 0 or not done.is_set():  # at least once, however the threads are scheduled
            m = executor.metrics()
            executor.last_tick()
            reads += 1
        worker.join()
        executor.close()
        m = executor.metrics()
        assert m["ticks"] == 400, m
        print(reads, m["inferences"])
    """)
    _, inferences = map(int, out.split())
    assert inferences > 0, out  # and, in the child, every one of the 400 ticks counted


def test_interpreter_exit_with_a_python_policy_in_flight():
    """An executor never closed, its worker inside a Python policy when the interpreter exits:
    the process exits, with status 0, within the limit."""
    out = run_child("""
        import threading, time, numpy as np, focusvla
        started = threading.Event()
        def policy(images, instruction, proprio):
            if proprio[0] > 0:
                started.set()
                time.sleep(0.5)
            return np.ones((8, 7))
        executor = focusvla.ChunkExecutor(policy, mode="async", threshold=6)
        executor.tick([], "x", [0])
        executor.tick([], "x", [1])  # 6 left: starts the background call
        assert started.wait(20.0)
        print("exiting")
    """, timeout=60)
    assert out.strip() == "exiting", out
