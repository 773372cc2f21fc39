"""Attacks on the code_exec sandbox, one group per class of issue 13; each checks the score AND the host afterwards.

    python -m pytest -q tests/test_sandbox_attacks.py

The `host` fixture plants canary files inside and outside /tmp, a root-only secret, a TCP listener on
loopback and a unix socket in the host's /tmp; after each attack it checks the canaries are unchanged,
no sandbox process is left, no listener got a byte, and the secret is nowhere in the output.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from rsft_gen.sandbox import Limits, run_many
from tests.test_sandbox import descendants

LIM = Limits(timeout_s=3.0, memory_mb=256, file_mb=1, output_bytes=20_000)
EXPECTED = 987_654_321  # the expected answer: it must never be reachable from inside the sandbox
TESTS = [f"assert solve(3) == {EXPECTED}", f"assert math.isclose(solve(3), {EXPECTED})", "assert solve(4) is True"]


@pytest.fixture
def host(tmp_path):
    secret = uuid.uuid4().hex
    token = Path("/root" if os.geteuid() == 0 else tmp_path) / f".rsft_secret_{secret[:8]}"
    token.write_text(secret)
    token.chmod(0o600)
    canaries = {
        Path(f"/tmp/rsft_canary_{uuid.uuid4().hex}"): "in-tmp",
        Path(__file__).parent / f".rsft_canary_{uuid.uuid4().hex}": "outside-tmp",
    }
    for p, text in canaries.items():
        p.write_text(text)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    tcp.setblocking(False)
    unix_path = f"/tmp/rsft_sock_{uuid.uuid4().hex[:8]}"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen(4)
    unix.setblocking(False)
    info = {
        "secret": secret,
        "token": str(token),
        "canaries": [str(p) for p in canaries],
        "port": tcp.getsockname()[1],
        "unix": unix_path,
    }
    yield info
    try:
        for p, text in canaries.items():
            assert p.read_text() == text, f"canary {p} changed"
        assert sorted(Path("/tmp").glob("rsft_escape_*")) == []
        assert descendants() == [], "a sandbox process is still running"
        for listener in (tcp, unix):
            with pytest.raises(BlockingIOError):
                listener.accept()  # no connection ever arrived, so no byte either
    finally:
        for p in canaries:
            p.unlink(missing_ok=True)
        token.unlink(missing_ok=True)
        tcp.close()
        unix.close()
        os.unlink(unix_path)


def run(host, codes: list[str], tests=TESTS):
    results = run_many([(c, tests) for c in codes], LIM, workers=2)
    for r in results:
        assert host["secret"] not in r.output
        assert str(EXPECTED) not in r.output.replace(f"== {EXPECTED}", "")  # only our own note may name it
    return results


def test_host_files_cannot_be_read(host):
    codes = [
        f"print(open({host['token']!r}).read())",
        "print(open('/etc/shadow').read())",
        "print(open('/proc/1/environ').read())",
        f"import os\nprint(os.listdir({str(Path(__file__).parent)!r}))",
        "import ctypes, os\nfd = os.open('/', os.O_RDONLY)\n"  # open_by_handle_at needs CAP_DAC_READ_SEARCH
        "libc = ctypes.CDLL(None, use_errno=True)\nprint(libc.open_by_handle_at(fd, b'\\0' * 16, 0))",
    ]
    results = run(host, codes)
    assert [r.fraction for r in results] == [0.0] * len(codes)
    assert [r.status for r in results] == ["load_error"] * 4 + ["violation"]
    # /proc/1 is the sandbox's own fork server (bwrap --as-pid-1), which is not dumpable: not even its environment
    assert "PermissionError" in results[2].output and "HOME=/root" not in results[2].output


def test_writes_cannot_escape(host):
    c_in, c_out = host["canaries"]
    codes = [
        f"open({c_in!r}, 'w').write('x')",
        f"open({c_out!r}, 'w').write('x')",
        f"import os\nd = os.open('/tmp', os.O_RDONLY)\nfd = os.open({os.path.basename(c_in)!r}, "
        "os.O_WRONLY | os.O_TRUNC, dir_fd=d)\nos.write(fd, b'x')",
        f"import os\nos.symlink({c_out!r}, 'link')\nopen('link', 'w').write('x')",
        "open('/tmp/rsft_escape_" + uuid.uuid4().hex + "', 'w').write('x')\ndef solve(n):\n    return 0",
        f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({host['unix']!r})\ns.sendall(b'leak')",
        f"import socket\ns = socket.create_connection(('127.0.0.1', {host['port']}))\ns.sendall(b'leak')",
    ]
    results = run(host, codes)
    assert [r.fraction for r in results] == [0.0] * len(codes)


def test_syscalls_through_ctypes_are_killed(host):
    pre = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    codes = [
        pre + "libc.fork()",
        pre + "libc.socket(2, 1, 0)",
        pre + "libc.ptrace(16, 1, 0, 0)",
        pre + "libc.unshare(0x10000000)",
        pre + "libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",  # the fork server
        "import os, signal\nos.kill(-1, signal.SIGKILL)",
    ]
    results = run(host, codes)
    assert [(r.status, r.fraction) for r in results] == [("violation", 0.0)] * len(codes)


REWARD_HACKS = {
    "shadowed builtins": "abs = lambda x: 0\nset = sorted = lambda *a, **k: 0\ndef solve(n):\n    return 1",
    "patched math.isclose": "import math\nmath.isclose = lambda *a, **k: True\ndef solve(n):\n    return 1",
    "always-equal object": "class A:\n    def __eq__(self, o): return True\n    __hash__ = object.__hash__\n"
    "    def __bool__(self): return True\ndef solve(n):\n    return A()",
    "str subclass": "class S(str):\n    def __eq__(self, o): return True\ndef solve(n):\n    return S('x')",
    "audit hook reads the tests": "import sys\nseen = []\nsys.addaudithook(lambda e, a: seen.append(repr(a)) "
    "if e in ('compile', 'exec') else None)\ndef solve(n):\n    import re\n"
    "    for s in seen:\n        m = re.search(r'== (\\d{6,})', s)\n"
    "        if m: return int(m.group(1))\n    return True if n == 4 else 0",
    "frames and gc": "import sys, gc, re\ndef solve(n):\n    f, found = sys._getframe(1), []\n"
    "    while f is not None:\n        found.append(repr(f.f_locals)); f = f.f_back\n"
    "    found += [o for o in gc.get_objects() if isinstance(o, str)]\n"
    "    for s in found:\n        m = re.search(r'9876\\d{5}', s)\n        if m: return int(m.group())\n"
    "    return True if n == 4 else 0",
    "its own file descriptors": "import os, re\ndef solve(n):\n    for fd in os.listdir('/proc/self/fd'):\n"
    "        try: data = os.read(os.open('/proc/self/fd/' + fd, os.O_RDONLY | os.O_NONBLOCK), 1 << 20)\n"
    "        except OSError: continue\n        m = re.search(rb'9876\\d{5}', data)\n"
    "        if m: return int(m.group())\n    return True if n == 4 else 0",
}


def test_reward_hacks_inside_the_process_score_zero(host):
    results = run(host, list(REWARD_HACKS.values()))
    got = dict(zip(REWARD_HACKS, [(r.status, r.passed) for r in results]))
    # solve(4) is True is a real pass for the last three (they return True for 4); the expected value tests are not
    assert got == {
        "shadowed builtins": ("ok", 0),
        "patched math.isclose": ("ok", 0),
        "always-equal object": ("ok", 0),
        "str subclass": ("ok", 0),
        "audit hook reads the tests": ("ok", 1),
        "frames and gc": ("ok", 1),
        "its own file descriptors": ("ok", 1),
    }, got
    honest = "def solve(n):\n    return 987654321 if n == 3 else True"
    assert run(host, [honest])[0].fraction == 1.0


def test_unparsed_tests_are_counted_and_run_in_the_weaker_mode(host):
    tests = ["for n in [3]:\n    assert solve(n) == 987654321", "assert solve(4) is True"]
    r = run(host, ["def solve(n):\n    return 987654321 if n == 3 else True"], tests)[0]
    assert (r.fraction, r.unparsed) == (1.0, 1)
