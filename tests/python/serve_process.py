"""`focusvla serve` as a subprocess, and raw websocket clients, for the server tests
(test_serve.py, test_serve_limits.py): the `serve` fixture starts servers on free ports and kills
every one at teardown; a watchdog kills any server that outlives WATCHDOG_S."""
import base64
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
import json
from pathlib import Path

import pytest
import websockets.sync.client
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from serve_common import UNNORM, die_with_parent

CLI = os.environ.get("FOCUSVLA_CLI", str(Path(__file__).resolve().parents[2] / "build" / "focusvla"))
# The oracle's `focusvla act` (the release tool when CLI is a sanitized server build).
ACT_CLI = os.environ.get("FOCUSVLA_ACT_CLI", CLI)
DATA = Path(os.environ.get("FOCUSVLA_TEST_DATA", Path(CLI).parent / "test_data")) / "policy"
FOCUS = DATA / "focus_f32"  # FocusVLA head, 2 cameras, proprio 8, fp32
PRO_1CAM = DATA / "pro_f32_1cam"  # VLA-Adapter-Pro head, 1 camera, no proprio projector
HOST = "127.0.0.1"
LISTEN_TIMEOUT_S = 60
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer")
WATCHDOG_S = 420  # a server older than this is killed: anything blocked on it then fails, never hangs

# ----------------------------------------------------------------------------------------------
# Server processes


class Server:
    """One `focusvla serve --port 0` subprocess; stdout and stderr go to files."""

    def __init__(self, args, workdir, name):
        self.args = args
        self.stdout_path = workdir / f"{name}.stdout"
        self.log_path = workdir / f"{name}.stderr"
        env = {k: v for k, v in os.environ.items() if k != "FOCUSVLA_API_KEY"}  # --api-key's fallback
        with open(self.stdout_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                         preexec_fn=die_with_parent)
        self.watchdog = threading.Timer(WATCHDOG_S, self.kill)
        self.watchdog.daemon = True
        self.watchdog.start()
        self.listening_line, self.port = self._wait_listening()

    def _wait_listening(self):
        deadline = time.monotonic() + LISTEN_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.stdout_path.read_text(errors="replace")
            for line in text.splitlines(keepends=True):
                m = re.search(r"ws://[^:]+:(\d+)", line)
                if line.startswith("focusvla serve: listening on ") and m and line.endswith("\n"):
                    return line.strip(), int(m.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"focusvla serve exited with status {self.proc.returncode} before listening:\n"
                                     f"{' '.join(map(str, self.args))}\nstdout: {text}\nstderr: {self.log()}")
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"no listening line within {LISTEN_TIMEOUT_S} s:\n{self.log()}")

    @property
    def uri(self):
        return f"ws://{HOST}:{self.port}"

    def log(self):
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def alive(self):
        return self.proc.poll() is None

    def http(self, path, timeout=10):
        with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()

    def stats(self):
        status, body = self.http("/stats")
        assert status == 200, body
        return json.loads(body)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self):
        self.watchdog.cancel()
        self.kill()

    def sanitizer_reports(self):
        """Lines where AddressSanitizer, UBSan or LeakSanitizer reported (the serve_asan build)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if any(mark in line for mark in SANITIZER_MARKS)]


@pytest.fixture
def serve(tmp_path):
    """serve(checkpoint=FOCUS, *flags) -> Server; every server is killed at teardown."""
    servers = []

    def start(*flags, checkpoint=FOCUS, unnorm_key=UNNORM, stats_interval=True):
        args = [CLI, "serve", "--checkpoint", str(checkpoint), "--port", "0", "--device", "cpu"]
        if unnorm_key:
            args += ["--unnorm-key", unnorm_key]
        if stats_interval:
            args += ["--stats-interval-s", "1"]
        args += [str(f) for f in flags]
        server = Server(args, tmp_path, f"serve{len(servers)}")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    reports = [f"{server.log_path.name}: {line}" for server in servers for line in server.sanitizer_reports()]
    assert not reports, "sanitizer reports:\n" + "\n".join(reports[:20])


def openpi_client(server, **kwargs):
    return WebsocketClientPolicy(host=HOST, port=server.port, **kwargs)


def raw_connect(server, **kwargs):
    """A plain websockets connection (the library openpi's client uses) and the server metadata."""
    ws = websockets.sync.client.connect(server.uri, compression=None, max_size=None, open_timeout=10,
                                        close_timeout=5, **kwargs)
    metadata = msgpack_numpy.unpackb(ws.recv(timeout=10))
    return ws, metadata


def close_quietly(closeable):
    try:
        closeable.close()
    except Exception:
        pass


class RawSocketClient:
    """A websocket client over a bare TCP socket: frames exactly as written (masked with a zero key),
    for half frames, pipelining and oversize frames."""

    def __init__(self, port, timeout=10, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed during the handshake: {self.buf!r}"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    @staticmethod
    def frame(payload, opcode=0x2, length=None):
        n = len(payload) if length is None else length
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        return header + b"\0\0\0\0" + payload  # zero mask key: the payload goes as is

    def send(self, data):
        self.sock.sendall(data)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        """(opcode, payload) of the next server frame (server frames are never masked)."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        assert not b1 & 0x80, "server frames must not be masked"
        return b0 & 0x0F, self._read(n)

    def close(self):
        close_quietly(self.sock)
