"""Second round of attacks on the code_exec sandbox (issue 13, red team): each one worked before its fix, or checks a
promise nothing else tested. Every test checks the score AND the host afterwards (the `host` fixture of
test_sandbox_attacks: canaries, secret, listeners, nothing left running).

    python -m pytest -q tests/test_sandbox_attacks_new.py
"""

from __future__ import annotations

import time

from rsft_gen.sandbox import run_many
from rsft_gen.test_parse import check_test, decode, parse_test
from tests import test_sandbox_attacks as first_round

EXPECTED, LIM, TESTS, run = first_round.EXPECTED, first_round.LIM, first_round.TESTS, first_round.run
host = first_round.host  # the fixture: canaries, a secret, listeners and leftover processes checked after each test

GOOD = f"def solve(n):\n    return {EXPECTED} if n == 3 else True"


def run_one_worker(host, codes: list[str], tests=TESTS):
    """Like `run`, on ONE sandbox: what a program does to the fork server or the channel hits the next program."""
    results = run_many([(c, tests) for c in codes], LIM, workers=1)
    for r in results:
        assert host["secret"] not in r.output
    return results


def test_host_sysctls_are_read_only(host):
    # Run by root, the sandbox's uid is the host's uid 0 (without capabilities) and sysctl files check only the
    # uid: before /proc was remounted read-only this rewrote the host's fs.file-max (and could set core_pattern).
    before = open("/proc/sys/fs/file-max").read()
    code = "v = open('/proc/sys/fs/file-max').read()\nopen('/proc/sys/fs/file-max', 'w').write(v)\n" + GOOD
    r = run(host, [code])[0]
    assert (r.status, r.fraction) == ("load_error", 0.0) and "Read-only file system" in r.output
    assert open("/proc/sys/fs/file-max").read() == before


FORGE = (
    "import json, os, struct\n"
    "def frame(header, *blobs):\n"
    "    head = json.dumps(dict(header, sizes=[len(b) for b in blobs])).encode()\n"
    "    return struct.pack('>I', len(head)) + head + b''.join(blobs)\n"
    "report = json.dumps({'load': None, 'calls': [['ok', 0]] * 3, 'tests': []}).encode()\n"
    "header = {'timeout': False, 'signal': None, 'exit': 0}\n"
    "os.write(os.open('/proc/1/fd/1', os.O_WRONLY), frame(header, report, b''))\n"
    "def solve(n):\n    return 0\n"
)


def test_result_channel_cannot_be_forged_or_shifted(host):
    # bwrap's reaper (pid 1) held the parent's pipes; a program reopened /proc/1/fd/1 and wrote a frame, after which
    # every later program on that sandbox got the result of the one before it (a correct one scored 0, a wrong 1).
    results = run_one_worker(host, [FORGE, GOOD, "def solve(n):\n    return 0", GOOD])
    assert [r.fraction for r in results] == [0.0, 1.0, 0.0, 1.0]
    assert "PermissionError" in results[0].output


def test_signals_to_the_fork_server_are_violations_not_stalls(host):
    # rt_sigqueueinfo / pidfd_send_signal were not filtered: SIGSTOP to the fork server stalled the worker 35 s.
    pre = "import ctypes, signal\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    codes = [
        pre + "info = (ctypes.c_int * 32)(signal.SIGSTOP, 0, -1)\nlibc.syscall(129, 1, signal.SIGSTOP, info)\n" + GOOD,
        pre + "libc.syscall(424, libc.syscall(434, 1, 0), signal.SIGSTOP, None, 0)\n" + GOOD,
    ]
    start = time.monotonic()
    results = run_one_worker(host, codes + [GOOD])
    assert [(r.status, r.fraction) for r in results] == [("violation", 0.0)] * 2 + [("ok", 1.0)]
    assert time.monotonic() - start < 10


FLOOD = (  # 200,000 ints equal modulo 2**61 - 1: a set of them took the parent minutes (quadratic) to build
    "import __main__\nP = 2 ** 61 - 1\n"
    "__main__.encode = lambda v, depth=0: ['s'] + [['i', hex(P * k)] for k in range(1, 200_000)]\n" + GOOD
)
FLOOD_LIST = "def solve(n):\n    return [(2 ** 61 - 1) * k for k in range(1, 200_000)]"
HUGE_INT = "def solve(n):\n    return 1 << 30_000_000"  # squared in the parent: minutes of Karatsuba


def test_results_that_would_hold_the_parent_are_refused_quickly(host):
    tests = ["assert solve(3) == {1, 2}", "assert set(solve(3)) == {1, 2}", "assert solve(3) ** 2 == 4"]
    start = time.monotonic()
    results = run(host, [FLOOD, FLOOD_LIST, HUGE_INT], tests)
    assert [r.fraction for r in results] == [0.0] * 3
    assert time.monotonic() - start < 20
    assert run(host, ["def solve(n):\n    return [2, 1] if n else 2"], tests[1:2])[0].fraction == 1.0
    # the same guards, straight in the parent's interpreter
    p = 2**61 - 1
    assert check_test(parse_test("assert dict(f()) == {}"), [[[p * k, 0] for k in range(1, 5000)]]) is False
    assert check_test(parse_test("assert round(2.5, f()) == 2"), [-(10**9)]) is False
    assert decode(["d", [1, 2], [["t", 1, 2], 3]]) == {1: 2, (1, 2): 3}


LEAK = (  # reads the source of the weak test (which holds the expected value of the split test too) from its frames
    "import re, sys\ndef solve(n):\n    f = sys._getframe(1)\n    while f is not None:\n"
    "        m = re.search(r'9876\\d{5}', repr(f.f_locals))\n        if m and n == 3: return int(m.group())\n"
    "        f = f.f_back\n    return True if n == 4 else 0\n"
)


def test_weak_tests_do_not_leak_expected_values_to_split_tests(host):
    tests = [f"assert solve(3) == {EXPECTED}", f"for n in [3]:\n    assert solve(n) == {EXPECTED}"]
    tests.append("assert solve(4) is True")
    leak, honest = run(host, [LEAK, GOOD], tests)
    assert (leak.passed, leak.unparsed) == (2, 1)  # the weak test it fakes, and solve(4); not the split test
    assert (honest.fraction, honest.unparsed) == (1.0, 1)


def test_memory_outside_rlimit_as_and_leftovers(host):
    memfd = "import os\nfd = os.memfd_create('x')\nos.write(fd, bytes(1 << 20))\n" + GOOD  # not counted by RLIMIT_AS
    deep = "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n" + GOOD  # the fork server dies
    look = "import os\ndef solve(n):\n    return os.listdir('/tmp') == ['.output', 'work'] and not os.listdir('.')"
    results = run_one_worker(host, [memfd, deep, look], ["assert solve(3) is True"])
    assert results[0].status == "load_error" and "Operation not permitted" in results[0].output
    assert results[1].fraction == 0.0 and results[2].fraction == 1.0


CORRECT = """
import collections, dataclasses, datetime, decimal, fractions, functools, heapq, itertools, json, logging, math
import string, sys, threading, traceback, typing
from concurrent.futures import ThreadPoolExecutor
sys.setrecursionlimit(20000)
print("x" * 20_000_000)  # more than RLIMIT_FSIZE (1 MiB here): only output_bytes come back, and it is no error
logging.warning("fine")
traceback.print_stack()
@dataclasses.dataclass
class P:
    x: int
def depth(n):
    return 0 if n == 0 else 1 + depth(n - 1)
def solve(n: int) -> typing.Any:
    if n == 4:
        return True
    with ThreadPoolExecutor(4) as ex:
        squares = sum(ex.map(lambda v: v * v, range(4)))
    parts = [depth(5000), squares, P(1).x, int(decimal.Decimal("1.5") * 2), fractions.Fraction(1, 2).denominator,
             datetime.date(2024, 1, 2).day, len(string.digits), json.loads("[1]")[0], math.isqrt(16),
             heapq.nsmallest(1, [3, 1])[0], len(list(itertools.permutations(range(3)))),
             functools.reduce(int.__add__, [1, 2]), collections.Counter("aab")["a"]]
    return 987654321 if parts == [5000, 14, 1, 3, 2, 2, 10, 1, 4, 1, 6, 3, 2] else parts
"""


def test_correct_programs_still_score_one(host):
    r = run(host, [CORRECT])[0]
    assert (r.status, r.fraction) == ("ok", 1.0), r.output[-2000:]
    assert r.output.startswith("xxxx")
    # decided: no processes, so multiprocessing.Pool fails (no /dev/shm, no fork): a plain failure, nothing left
    pool = "import multiprocessing\ndef solve(n):\n    with multiprocessing.Pool(2) as p:\n"
    pool += "        return p.map(abs, [n])[0]"
    assert run(host, [pool])[0].fraction == 0.0
