"""The code_exec sandbox: correct programs score 1, the classic attacks score 0, and the machine and the run go on.

    python -m pytest -q tests/test_sandbox.py

Limits are kept small (256 MiB, 2-4 s) so a failure of containment could not hurt the shared machine much.
Attacks aimed at the host itself (secrets, canaries, sockets, reward hacking) are in test_sandbox_attacks.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from rsft_gen import sandbox
from rsft_gen.sandbox import Limits, SandboxUnavailable, run_many, run_tests
from rsft_gen.test_parse import check_test, decode, parse_test

SMALL = Limits(timeout_s=2.0, memory_mb=256, file_mb=1, output_bytes=2000)
GOOD = ("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])


def descendants() -> list[int]:
    """Processes whose parent chain reaches this test process (a sandbox left running would be one)."""
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    me, out = os.getpid(), []
    for pid in parent:
        p, seen = pid, 0
        while p in parent and p not in (0, 1) and seen < 64:
            p, seen = parent[p], seen + 1
            if p == me:
                out.append(pid)
                break
    return out


@pytest.fixture(autouse=True)
def run_unaffected():
    """After every test: nothing of the sandbox is left running, and a correct program still scores 1."""
    yield
    assert descendants() == []
    assert run_tests(*GOOD, SMALL).fraction == 1.0
    assert descendants() == []


def test_correct_and_partly_correct_programs():
    r = run_tests("def add(a, b):\n    return a * b", ["assert add(2, 2) == 4", "assert add(1, 2) == 3"], SMALL)
    assert (r.status, r.passed, r.total, r.fraction, r.unparsed) == ("ok", 1, 2, 0.5, 0)
    assert "test 1 failed: AssertionError" in r.output
    assert {"bwrap", "userns", "pidns", "netns", "ipcns", "mountns", "no_caps", "seccomp", "rlimits"} <= set(r.layers)


def test_stdlib_programs_score_one():
    # traceback / logging write to stderr; none of it may count against a correct program.
    code = """
import traceback, logging, re, itertools, functools, collections, heapq, math, hashlib, random
logging.basicConfig(level=logging.INFO)
def solve(xs):
    try:
        1 / 0
    except ZeroDivisionError:
        traceback.print_exc()
        logging.exception("handled")
    logging.getLogger("x").warning("still fine")
    random.seed(0)
    words = re.findall(r"[a-z]+", "a bb ccc")
    pairs = list(itertools.combinations(xs, 2))
    total = functools.reduce(lambda a, b: a + b, xs, 0)
    counts = collections.Counter(xs)
    smallest = heapq.nsmallest(1, xs)[0]
    digest = hashlib.sha256(b"x").hexdigest()[:4]
    return [len(words), len(pairs), total, counts[1], smallest, math.floor(math.sqrt(16)), digest,
            random.randint(0, 0)]
"""
    expected = [3, 3, 4, 2, 1, 4, "2d71", 0]
    r = run_tests(code, [f"assert solve([1, 1, 2]) == {expected!r}"], SMALL)
    assert (r.status, r.fraction) == ("ok", 1.0), r.output
    assert "ZeroDivisionError" in r.output and "still fine" in r.output


def test_infinite_loop_killed_within_timeout():
    start = time.monotonic()
    r = run_tests("while True:\n    pass", ["assert True"], Limits(timeout_s=1.0, memory_mb=256))
    assert time.monotonic() - start < 1.0 + 1.0
    assert r.status == "timeout" and r.fraction == 0.0


def test_memory_bomb():
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))"
    r = run_tests(code, ["assert True"], Limits(timeout_s=5, memory_mb=256))
    assert r.fraction == 0.0 and "MemoryError" in r.output


def test_fork_bomb_and_exec_are_violations():
    jobs = [
        ("import os\nwhile True:\n    os.fork()", ["assert True"]),
        ("import subprocess\nsubprocess.run(['true'])", ["assert True"]),
        ("import os\nos.system('echo hi')", ["assert True"]),
    ]
    for r in run_many(jobs, Limits(timeout_s=3, memory_mb=256), workers=2):
        assert (r.status, r.fraction) == ("violation", 0.0) and r.violations


def test_threads_still_work():
    code = (
        "import threading\nout = []\ndef f():\n    t = threading.Thread(target=lambda: out.append(1))\n"
        "    t.start(); t.join()\n    return len(out)"
    )
    assert run_tests(code, ["assert f() == 1"], SMALL).fraction == 1.0


def test_writes_outside_its_directory_fail_and_its_own_directory_works():
    target = Path.cwd() / f"sandbox_escape_{uuid.uuid4().hex}.txt"
    code = f"open({str(target)!r}, 'w').write('escaped')\ndef f():\n    return 1"
    r = run_tests(code, ["assert f() == 1"], SMALL)
    assert not target.exists() and r.fraction == 0.0 and r.status == "load_error"
    assert "FileNotFoundError" in r.output or "Read-only file system" in r.output
    assert (
        run_tests("open('notes.txt', 'w').write('ok')", ["assert open('notes.txt').read() == 'ok'"], SMALL).fraction
        == 1.0
    )


def test_world_writable_tmp_is_private():
    name = f"/tmp/sandbox_tmp_{uuid.uuid4().hex}"
    r = run_tests(f"open({name!r}, 'w').write('x')", ["assert True"], SMALL)
    assert r.status == "ok" and not os.path.exists(name)


def test_network_connection():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'leak')"
    r = run_tests(code, ["assert True"], Limits(timeout_s=3, memory_mb=256))
    with pytest.raises(socket.timeout):
        server.accept()  # nothing ever arrived
    server.close()
    assert (r.status, r.fraction) == ("violation", 0.0)


def test_output_flooding():
    start = time.monotonic()
    r = run_tests("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", ["assert True"], SMALL)
    assert r.fraction == 0.0 and len(r.output) <= SMALL.output_bytes
    assert time.monotonic() - start < SMALL.timeout_s + 1  # its timeout ends it; output past output_bytes is dropped


def test_early_exits_and_builtin_patches_score_zero():
    early_exit = "import sys\nsys.exit(0)"
    hard_exit = "import os\ndef add(a, b):\n    return 0\nos._exit(0)"
    patch_builtins = "import builtins\nbuiltins.abs = lambda x: 0\nabs = lambda x: 0\ndef add(a, b):\n    return 99"
    results = run_many(
        [(early_exit, GOOD[1]), (hard_exit, GOOD[1]), (patch_builtins, ["assert abs(add(1, 2) - 3) < 1"]), GOOD],
        SMALL,
        workers=2,
    )
    assert [r.fraction for r in results] == [0.0, 0.0, 0.0, 1.0]
    assert results[0].status == "load_error" and results[1].status == "crashed"


def test_many_in_parallel_with_attacks_mixed_in():
    attacks = [
        "while True:\n    pass",
        "import os\nos.fork()",
        "x = bytearray(10 ** 9)",
        "import socket\nsocket.socket()",
    ]
    jobs = [GOOD if i % 2 == 0 else (attacks[i // 2 % 4], ["assert True"]) for i in range(12)]
    results = run_many(jobs, Limits(timeout_s=4.0, memory_mb=256), workers=2)
    assert [r.fraction for r in results] == [1.0 if i % 2 == 0 else 0.0 for i in range(12)], [r.status for r in results]


def test_each_program_starts_clean():
    # One worker runs both in one sandbox: the second must see nothing the first left behind.
    dirty = (
        "import math, os, sys\nmath.pi = 3\nopen('/tmp/left', 'w').write('x')\nopen('here', 'w').write('x')\n"
        "os.environ['LEFT'] = '1'\nsys.modules['json'] = None\ndef f():\n    return 1"
    )
    check = (
        "import math, os, json\ndef f():\n    return [math.pi > 3.14, os.path.exists('/tmp/left'), "
        "os.path.exists('here'), 'LEFT' in os.environ, json.dumps(1)]"
    )
    results = run_many(
        [(dirty, ["assert f() == 1"]), (check, ["assert f() == [True, False, False, False, '1']"])], SMALL, workers=1
    )
    assert [r.fraction for r in results] == [1.0, 1.0], results[1].output


def test_site_packages_are_importable_when_asked():
    code = "import numpy\ndef f():\n    return int(numpy.arange(4).sum())"
    assert run_tests(code, ["assert f() == 6"], SMALL).status == "load_error"
    assert (
        run_tests(code, ["assert f() == 6"], Limits(timeout_s=10, memory_mb=1024, site_packages=True)).fraction == 1.0
    )


_VENV_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from rsft_gen.sandbox import Limits, run_many
lim = Limits(timeout_s=10, memory_mb=512, site_packages=True)
uses = "import probe_pkg\\ndef f():\\n    return probe_pkg.VALUE"
f = "\\ndef f():\\n    return 1"
litter = "import os\\nfor d, _, _ in os.walk('/tmp'):\\n    open(os.path.join(d, 'litter'), 'w').close()" + f
looks = "import os\\nprint(sorted(os.path.join(d, n) for d, ds, fs in os.walk('/tmp') for n in ds + fs))" + f
jobs = [(uses, ["assert f() == 41"]), (litter, ["assert f() == 1"]), (uses, ["assert f() == 41"])]
out = run_many(jobs + [(looks, ["assert f() == 1"])], lim, workers=1)
print(json.dumps([[r.status, r.fraction, r.output] for r in out]))
"""


def test_site_packages_from_a_venv_under_tmp(tmp_path):
    """A venv under /tmp (a fresh clone in /tmp, as CI may make) must stay importable from inside the sandbox, whose
    own /tmp is private, and what one program leaves under /tmp must not be seen by the next."""
    venv = Path(tempfile.mkdtemp(prefix="rsft_venv_", dir="/tmp"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        python = venv / "bin" / "python"
        site_dir = subprocess.run(
            [python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert site_dir.startswith("/tmp/")
        (Path(site_dir) / "probe_pkg.py").write_text("VALUE = 41\n")
        root = str(Path(__file__).resolve().parents[1])
        done = subprocess.run(
            [python, "-c", _VENV_PROBE, root], capture_output=True, text=True, timeout=120, cwd=str(tmp_path)
        )
        assert done.returncode == 0, done.stderr[-2000:]
        uses, litter, uses_again, looks = json.loads(done.stdout.strip().splitlines()[-1])
        assert uses[:2] == ["ok", 1.0] and litter[:2] == ["ok", 1.0] and uses_again[:2] == ["ok", 1.0], (uses, litter)
        assert looks[:2] == ["ok", 1.0] and looks[2].strip() == "['/tmp/.output', '/tmp/work']", looks
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_missing_bwrap_is_one_clear_error_unless_isolation_none(monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)  # as on a machine without the package
    with pytest.raises(SandboxUnavailable, match="package `bubblewrap`.*isolation: none"):
        run_tests(*GOOD, SMALL)
    with caplog.at_level(logging.WARNING, logger="rsft_gen.sandbox"):
        r = run_tests(*GOOD, Limits(timeout_s=2.0, memory_mb=256, isolation="none"))
    assert r.fraction == 1.0 and "process" in r.layers and "bwrap" not in r.layers
    assert "WITHOUT an OS sandbox" in caplog.text
    # still no fork and no network in the weaker mode (seccomp), and the expected answers stay here
    r = run_tests("import os\nos.fork()", ["assert True"], Limits(timeout_s=2.0, memory_mb=256, isolation="none"))
    assert r.status == "violation"


def test_run_by_root_the_program_is_the_hosts_nobody():
    """Started by root, bwrap would map the sandbox's uid to the host's uid 0 (no capabilities, but root for every
    check that looks at the uid alone); sandbox_user starts it as nobody, so the host sees uid 65534."""
    if os.geteuid() != 0:
        pytest.skip("the parent is not root: bwrap already runs as this user")
    # /proc/slabinfo is 0400 root: host uid 0 reads it even without capabilities, the host's nobody cannot
    code = (
        "try:\n    open('/proc/slabinfo').read()\n    print('READ')\n"
        "except OSError as e:\n    print(type(e).__name__)\ndef f():\n    return 1"
    )
    r = run_tests(code, ["assert f() == 1"], SMALL)
    assert r.fraction == 1.0 and "host_uid_nobody" in r.layers, r
    assert r.output.strip() == "PermissionError", r.output
    assert not [p for p in Path(tempfile.gettempdir()).glob("rsft_sandbox_stage_*")]  # staging removed at close


def test_where_nobody_cannot_start_bwrap_it_starts_as_root_and_says_so(monkeypatch, caplog):
    if os.geteuid() != 0:
        pytest.skip("the parent is not root: bwrap already runs as this user")
    monkeypatch.setattr(sandbox.sandbox_user, "_LAUNCH", "raise SystemExit('no user namespaces for nobody')")
    monkeypatch.setattr(sandbox, "_NOBODY_REFUSED", False)
    with caplog.at_level(logging.WARNING, logger="rsft_gen.sandbox"):
        r = run_tests(*GOOD, SMALL)
    assert r.fraction == 1.0 and "host_uid_root" in r.layers
    assert "could not start as nobody (no user namespaces for nobody); starting it as root" in caplog.text


def test_works_as_a_normal_user():
    """The parent itself runs as uid 65534 (bwrap then uses an unprivileged user namespace)."""
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root to drop to another uid, and a system Python that uid can read")
    tmp_path = Path(tempfile.mkdtemp(prefix="rsft_nonroot_"))  # pytest's tmp_path sits below a 0700 directory
    pkg = tmp_path / "rsft_gen"
    pkg.mkdir()
    for name in ("sandbox.py", "sandbox_harness.py", "sandbox_user.py", "test_parse.py"):
        shutil.copy(Path(sandbox.__file__).with_name(name), pkg / name)
    (pkg / "__init__.py").write_text("")
    for p in (tmp_path, pkg, *pkg.iterdir()):
        p.chmod(0o755)
    script = (
        "from rsft_gen.sandbox import run_many, Limits\n"
        "rs = run_many([('def add(a, b):\\n    return a + b', ['assert add(1, 2) == 3']),"
        " ('import os\\nos.fork()', ['assert True']), (\"open('/etc/passwd').read()\", ['assert True'])],"
        " Limits(timeout_s=3, memory_mb=256), workers=2)\n"
        "print([(r.status, r.fraction) for r in rs], 'bwrap' in rs[0].layers)\n"
    )
    out = subprocess.run(
        ["/usr/bin/python3", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: (os.setgroups([]), os.setgid(65534), os.setuid(65534)),
    )
    shutil.rmtree(tmp_path)
    assert out.stdout.strip() == "[('ok', 1.0), ('violation', 0.0), ('load_error', 0.0)] True", out.stderr


def test_parse_forms():
    p = parse_test("assert add(1, 2) == 3")
    assert p.calls == ("add(1, 2)",) and check_test(p, [3]) and not check_test(p, [4])
    p = parse_test("assert math.isclose(area(2), 12.566, rel_tol=0.001)")
    assert p.calls == ("area(2)",) and check_test(p, [12.5664]) and not check_test(p, [12.0])
    p = parse_test("assert is_prime(7) is True")
    assert check_test(p, [True]) and not check_test(p, [1])  # `is True`: 1 is not True
    p = parse_test("assert set(f([1, 2])) == set((2, 1))")
    assert p.calls == ("f([1, 2])",) and check_test(p, [[2, 1]])
    he = (
        "def check(candidate):\n    x = [1, 2]\n    assert candidate(x) == 3, 'msg'\n"
        "    assert abs(candidate([1.5]) - 1.5) < 1e-6\ncheck(total)\n"
    )
    p = parse_test(he)
    assert p.calls == ("total([1, 2])", "total([1.5])") and check_test(p, [3, 1.5]) and not check_test(p, [3, 2.0])
    for unparsed in (
        "for x in range(3):\n    assert f(x) == x",
        "assert all(f(x) for x in [1])",
        "def helper(): pass\nassert f() == helper()",
    ):
        assert parse_test(unparsed).calls is None
    # plain data only: tuples stay tuples, floats round-trip, big ints survive
    assert decode(["t", 1, ["f", "0.1"], ["i", hex(10**30)]]) == (1, 0.1, 10**30)
    assert check_test(parse_test("assert f() == (1, 2)"), [[1, 2]]) is False  # a list is not the tuple


def test_code_exec_reports_unparsed_tests():
    from reward.code_exec import code_exec

    seen = {}
    scores = code_exec(
        ["q"] * 2,
        ["def f(x):\n    return x", "def f(x):\n    return 0"],
        tests=[["assert f(1) == 1", "for i in range(3):\n    assert f(i) == i"]] * 2,
        timeout_s=2,
        log_metric=lambda k, v: seen.setdefault(k, v),
    )
    assert scores == [1.0, 0.0] and seen == {"unparsed_tests": 2}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
