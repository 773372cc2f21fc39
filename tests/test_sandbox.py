"""The code_exec sandbox contains the classic attacks; after each, the machine and the run are fine and the sample scores 0.

Limits are kept small (256 MiB, 2 s) so a failure of containment could not hurt the shared machine much.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from rsft_gen.sandbox import Limits, run_many, run_tests

SMALL = Limits(timeout_s=2.0, memory_mb=256, file_mb=1, output_bytes=2000)
GOOD = ("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the OS-level layers (uid drop, private tmpfs) need root")


def sandbox_processes() -> list[int]:
    """Processes running as one of the sandbox's uids (>= 1,000,000)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
        if uid >= 1_000_000:
            pids.append(int(pid))
    return pids


@pytest.fixture(autouse=True)
def run_unaffected():
    """After every attack: no sandbox process is left, and a correct program still scores 1."""
    yield
    assert sandbox_processes() == []
    assert run_tests(*GOOD, SMALL).fraction == 1.0


def test_correct_and_partly_correct_programs():
    r = run_tests("def add(a, b):\n    return a * b", ["assert add(2, 2) == 4", "assert add(1, 2) == 3"], SMALL)
    assert (r.status, r.passed, r.total, r.fraction) == ("ok", 1, 2, 0.5)
    assert "test 1 failed: AssertionError" in r.output
    assert {"rlimits", "audit_hook"} <= set(r.layers)


def test_infinite_loop_killed_within_timeout():
    start = time.monotonic()
    r = run_tests("while True:\n    pass", ["assert True"], Limits(timeout_s=1.0, memory_mb=256))
    assert time.monotonic() - start < 1.0 + 1.0
    assert r.status == "timeout" and r.fraction == 0.0


@pytest.mark.parametrize("hook", [True, False])
def test_memory_bomb(hook):
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))"
    r = run_tests(code, ["assert True"], Limits(timeout_s=5, memory_mb=256, audit_hook=hook))
    assert r.fraction == 0.0 and "MemoryError" in r.output


@pytest.mark.parametrize("hook", [True, pytest.param(False, marks=root_only)])
def test_fork_bomb(hook):
    code = "import os\nwhile True:\n    os.fork()"
    r = run_tests(code, ["assert True"], Limits(timeout_s=3, memory_mb=256, audit_hook=hook))
    assert r.fraction == 0.0
    # with the hook it is refused as a violation; without it RLIMIT_NPROC=1 under its own uid stops the first fork
    assert ("sandbox: os.fork" if hook else "BlockingIOError") in r.output


@pytest.mark.parametrize("hook", [True, pytest.param(False, marks=root_only)])
def test_write_outside_its_directory(hook):
    target = Path.cwd() / f"sandbox_escape_{uuid.uuid4().hex}.txt"
    code = f"open({str(target)!r}, 'w').write('escaped')\ndef f():\n    return 1"
    r = run_tests(code, ["assert f() == 1"], Limits(timeout_s=3, memory_mb=256, audit_hook=hook))
    assert not target.exists()
    # Denied either way: unwritable for the sandbox's uid, or invisible when the
    # checkout lives under /tmp, which the sandbox replaces with a private tmpfs.
    assert r.fraction == 0.0 and ("PermissionError" in r.output or "FileNotFoundError" in r.output)
    # catching the refusal does not help: the attempt itself is a violation
    caught = f"try:\n    open({str(target)!r}, 'w')\nexcept OSError:\n    pass\ndef f():\n    return 1"
    r = run_tests(caught, ["assert f() == 1"], SMALL)
    assert r.status == "violation" and r.fraction == 0.0 and not target.exists()
    # its own directory is writable
    assert run_tests("open('notes.txt', 'w').write('ok')", ["assert open('notes.txt').read() == 'ok'"], SMALL).fraction == 1.0


@root_only
def test_world_writable_tmp_is_private():
    name = f"/tmp/sandbox_tmp_{uuid.uuid4().hex}"
    r = run_tests(f"open({name!r}, 'w').write('x')", ["assert True"], Limits(timeout_s=3, memory_mb=256, audit_hook=False))
    assert r.status == "ok" and "tmpfs" in r.layers and not os.path.exists(name)


@pytest.mark.parametrize("hook", [True, pytest.param(False, marks=root_only)])
def test_network_connection(hook):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'leak')"
    r = run_tests(code, ["assert True"], Limits(timeout_s=3, memory_mb=256, audit_hook=hook))
    with pytest.raises(socket.timeout):
        server.accept()  # nothing ever arrived
    server.close()
    assert r.fraction == 0.0


def test_output_flooding():
    start = time.monotonic()
    r = run_tests("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", ["assert True"], SMALL)
    assert r.fraction == 0.0 and len(r.output) <= SMALL.output_bytes
    assert time.monotonic() - start < SMALL.timeout_s + 1  # RLIMIT_FSIZE stops it, not the timeout


def test_reward_hacks_score_zero():
    early_exit = "import sys\nsys.exit(0)"
    hard_exit = "import os\ndef add(a, b):\n    return 0\nos._exit(0)"
    patch_builtins = "import builtins\nbuiltins.abs = lambda x: 0\n__builtins__['abs'] = lambda x: 0\ndef add(a, b):\n    return 99"
    results = run_many([(early_exit, GOOD[1]), (hard_exit, GOOD[1]), (patch_builtins, ["assert abs(add(1, 2) - 3) < 1"]),
                        GOOD], SMALL, workers=2)
    assert [r.fraction for r in results] == [0.0, 0.0, 0.0, 1.0]
    assert results[1].status == "crashed"


def test_many_in_parallel_with_attacks_mixed_in():
    attacks = ["while True:\n    pass", "import os\nos.fork()", "x = bytearray(10 ** 9)", "import socket\nsocket.socket()"]
    jobs = [GOOD if i % 2 == 0 else (attacks[i // 2 % 4], ["assert True"]) for i in range(12)]
    # A timeout with room for a good program to start on a loaded machine (CI runs other jobs beside it).
    results = run_many(jobs, Limits(timeout_s=4.0, memory_mb=256), workers=2)
    assert [r.fraction for r in results] == [1.0 if i % 2 == 0 else 0.0 for i in range(12)], [r.status for r in results]
