"""Run untrusted, model-written Python against tests, contained.

    from rsft_gen.sandbox import Limits, run_many
    results = run_many([("def add(a, b): return a + b", ["assert add(1, 2) == 3"])], Limits(timeout_s=5))
    results[0].fraction   # 1.0

Each program runs in a fresh `python -I -S` child, in its own session / process
group, with layers of containment (each best-effort; `Result.layers` says which
were active):

- rlimits set before any untrusted line runs: RLIMIT_AS (memory), RLIMIT_CPU,
  RLIMIT_FSIZE (output and files), RLIMIT_NOFILE, RLIMIT_CORE=0 and
  RLIMIT_NPROC=1, so the child cannot fork or start threads;
- as root: a new network namespace (no interfaces, so no network) and a new
  mount namespace with private tmpfs over /tmp, /var/tmp, /run/lock and
  /dev/shm (the only world-writable places), then the child drops to an unused
  uid of its own, keeping only CAP_DAC_READ_SEARCH so it can still import the
  standard library. The kernel enforces RLIMIT_NPROC only for non-root users,
  which is why the uid drop matters. As a non-root user: a user+network
  namespace when the kernel allows it;
- an audit hook (sys.addaudithook) that refuses writes outside the private
  working directory, sockets, subprocesses, fork/exec, signals, ctypes, and the
  gc and traceback-frame introspection; any refused attempt
  is recorded as a violation and the sample scores 0 even if it caught the error;
- a wall-clock timeout; afterwards the whole process group is SIGKILLed and,
  as root, every process of the sample's uid too.

Output (stdout+stderr) goes to an unlinked file capped by RLIMIT_FSIZE; the
first `output_bytes` come back. Test results come back on a separate
write-only descriptor, each line tagged with a per-run random nonce, and count
only when the harness reaches its end: a program that exits early
(`sys.exit(0)` before the tests), crashes or is killed scores 0.
Tests get a pristine copy of the builtins, so patching `abs` or `sorted` fakes
nothing. Not defended: objects whose __eq__ always says True, and a solution
that deliberately digs the nonce out of the harness frames (sys._getframe is
allowed because the standard library needs it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Limits:
    timeout_s: float = 5.0  # wall clock for the whole program + tests
    memory_mb: int = 1024  # RLIMIT_AS
    file_mb: int = 16  # RLIMIT_FSIZE: the largest file (and total output) it may write
    tmpfs_mb: int = 64  # size of its private /tmp (root only)
    max_open_files: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 10_000  # how much of stdout+stderr comes back
    site_packages: bool = False  # True: run without -S so installed packages (numpy) import
    audit_hook: bool = True  # False only to test that the OS-level layers hold on their own


@dataclass
class Result:
    passed: int
    total: int
    status: str  # ok | timeout | load_error | violation | crashed
    output: str = ""
    violations: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fraction(self) -> float:
        if self.status in ("timeout", "violation", "crashed") or self.total == 0:
            return 0.0
        return self.passed / self.total


# The child: trusted setup first (limits, namespaces, uid, audit hook), then the
# untrusted code. It receives its job as JSON on stdin.
_CHILD = r'''
import sys, os, json, resource

def main():
    job = json.loads(sys.stdin.buffer.read())
    fd0 = os.open("/dev/null", os.O_RDONLY); os.dup2(fd0, 0); os.close(fd0)
    res, nonce = job.pop("result_fd"), job.pop("nonce")
    def report(line, write=os.write, OSError=OSError):  # bound now: the solution may patch os.write
        try: write(res, (nonce + " " + line + "\n").encode())
        except OSError: pass
    L = job["limits"]
    mb = 1 << 20
    for r, v in ((resource.RLIMIT_AS, L["memory_mb"] * mb), (resource.RLIMIT_CPU, int(L["timeout_s"]) + 1),
                 (resource.RLIMIT_FSIZE, L["file_mb"] * mb), (resource.RLIMIT_NOFILE, L["max_open_files"]),
                 (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(r, (v, v))
    layers = ["rlimits"]
    work = job["workdir"]
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    NEWNS, NEWUSER, NEWNET = 0x00020000, 0x10000000, 0x40000000
    if os.geteuid() == 0:
        if libc.unshare(NEWNET) == 0:
            layers.append("netns")
        if libc.unshare(NEWNS) == 0 and libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0:  # MS_REC|MS_PRIVATE
            opts = ("size=%dm,mode=1777" % L["tmpfs_mb"]).encode()
            ok = True
            for d in ("/tmp", "/var/tmp", "/run/lock", "/dev/shm"):
                if os.path.isdir(d):
                    ok &= libc.mount(b"tmpfs", d.encode(), b"tmpfs", 2 | 4 | 8, opts) == 0  # nosuid nodev noexec
            if ok:
                layers.append("tmpfs")
                work = "/tmp/work"
                os.mkdir(work, 0o700)
        uid = job["uid"]
        os.chown(work, uid, uid)
        class Hdr(ctypes.Structure): _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure): _fields_ = [("eff", ctypes.c_uint32), ("perm", ctypes.c_uint32), ("inh", ctypes.c_uint32)]
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        libc.prctl(8, 1, 0, 0, 0)  # PR_SET_KEEPCAPS
        os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
        data = (Data * 2)(); data[0].eff = data[0].perm = 1 << 2  # CAP_DAC_READ_SEARCH: read the stdlib under /root
        if libc.capset(ctypes.byref(Hdr(0x20080522, 0)), data) == 0:
            layers.append("uid")
    else:
        if libc.unshare(NEWUSER | NEWNET) == 0:
            layers.append("netns")
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    del libc, ctypes
    for m in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[m]
    os.chdir(work); os.umask(0o077)
    os.environ.clear(); os.environ.update(HOME=work, TMPDIR=work, PATH="/usr/bin:/bin", LANG="C.UTF-8")
    if L["audit_hook"]:
        sys.addaudithook(make_hook(report, os.path.realpath(work)))
        layers.append("audit_hook")
    report("layers " + ",".join(layers))
    run(job["code"], job["tests"], report)
    del job, report
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except BaseException:
        pass
    os._exit(0)

def make_hook(report, WORK, os=os):
    realpath, isdir, fspath = os.path.realpath, os.path.isdir, os.fspath
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    DENY = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "pty.", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.", "mmap.",
            "resource.setrlimit", "resource.prlimit", "sys._current_frames", "gc.get_",
            "_thread.start_new_thread", "os.setxattr", "os.removexattr", "sys.settrace", "sys.setprofile")
    PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod",
                   "shutil.copyfile", "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.move",
                   "shutil.rmtree", "shutil.chown"}
    FRAME_ATTRS = {"tb_frame", "f_back", "gi_frame", "cr_frame", "ag_frame", "f_globals", "f_locals"}
    NO_IMPORT = {"ctypes", "_ctypes", "mmap", "_posixsubprocess", "multiprocessing", "_multiprocessing"}
    busy = [False]
    def real(p):
        p = realpath(fspath(p))
        return p.decode(errors="replace") if isinstance(p, bytes) else p
    def inside(p):
        if isinstance(p, int):
            return True
        p = real(p)
        return p == WORK or p.startswith(WORK + "/")
    def deny(what):
        report("violation " + what.replace("\n", " ")[:200])
        raise PermissionError("sandbox: " + what)
    def hook(event, args):
        if busy[0]:
            return
        busy[0] = True
        try:
            if event == "open":
                path, mode, flags = args
                if path is None or isinstance(path, int) or inside(path):
                    return
                writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
                p = real(path)
                # directories too: a directory fd would let os.open(..., dir_fd=) write past this check
                if writing or isdir(p) or p.startswith(("/proc", "/dev/fd")):
                    deny("open %r" % (path,))
            elif event in PATH_EVENTS:
                for a in args:
                    if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                        deny("%s %r" % (event, a))
            elif event == "import":
                if args[0].split(".")[0] in NO_IMPORT:
                    deny("import " + args[0])
            elif event == "object.__getattr__":
                if args[1] in FRAME_ATTRS:
                    deny("frame access " + args[1])
            elif event.startswith(DENY):
                deny(event)
        finally:
            busy[0] = False
    return hook

def run(code, tests, report, BaseException=BaseException, compile=compile, exec=exec, print=print, type=type,
        str=str, enumerate=enumerate, dict=dict, vars=vars, stderr=sys.stderr):
    # Builtins are copied before the solution runs; tests get a pristine copy, so a solution
    # that patches `abs` or `sorted` cannot fake the tests' checks.
    import builtins
    pristine = dict(vars(builtins))
    ns = {"__name__": "__solution__", "__builtins__": dict(pristine)}
    try:
        exec(compile(code, "<solution>", "exec"), ns)
    except BaseException as e:
        report("load_error " + type(e).__name__)
        try:
            print("solution failed to load: %s: %s" % (type(e).__name__, str(e)[:500]), file=stderr)
        except BaseException:
            pass
        tests = []
    for i, test in enumerate(tests):
        try:
            exec(compile(test, "<test %d>" % i, "exec"), dict(ns, __builtins__=dict(pristine)))
            report("pass %d" % i)
        except BaseException as e:
            try:
                print("test %d failed: %s: %s" % (i, type(e).__name__, str(e)[:500]), file=stderr)
            except BaseException:
                pass
    report("done")

main()
'''


class _Slots:
    """Per-worker uids for root mode: each running sample owns one unused uid, so
    RLIMIT_NPROC counts only its own processes and they can all be killed by uid."""

    def __init__(self, n: int):
        base = 1_000_000 + (os.getpid() % 1_000_000) * n
        self._free = list(range(base, base + n))
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            return self._free.pop()

    def give(self, uid: int) -> None:
        with self._lock:
            self._free.append(uid)


def _kill_uid(uid: int) -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            os.kill(int(pid), signal.SIGKILL)
                        break
        except (OSError, ValueError):
            pass


_SLOTS = _Slots(64)


def run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> Result:
    """Run `code` then each test snippet in one contained child; see the module docstring."""
    if os.geteuid() != 0:
        return _run_tests(code, tests, limits, None)
    uid = _SLOTS.take()
    try:
        return _run_tests(code, tests, limits, uid)
    finally:
        _SLOTS.give(uid)


def _run_tests(code: str, tests: list[str], limits: Limits, uid: int | None) -> Result:
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="rsft_sandbox_") as harness:
        # Two opens of each file: write-only for the child, read-only for us; then unlink,
        # so the child can neither read its results back nor find the files by name.
        paths = [os.path.join(harness, n) for n in ("out", "res")]
        child_fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) for p in paths]
        our_fds = [os.open(p, os.O_RDONLY) for p in paths]
        workdir = os.path.join(harness, "work")
        os.mkdir(workdir, 0o700)  # used when there is no private tmpfs (non-root)
        for p in paths:
            os.unlink(p)
        job = {"code": code, "tests": list(tests), "nonce": nonce, "result_fd": child_fds[1],
               "limits": limits.__dict__, "workdir": workdir, "uid": uid if uid is not None else 65534}
        argv = [sys.executable, "-I"] + ([] if limits.site_packages else ["-S"]) + ["-c", _CHILD]
        status = None
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=child_fds[0], stderr=child_fds[0],
                                    pass_fds=(child_fds[1],), start_new_session=True, cwd="/",
                                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        finally:
            for fd in child_fds:
                os.close(fd)
        try:
            proc.communicate(json.dumps(job).encode(), timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            _kill_tree(proc, uid)
        with os.fdopen(our_fds[0], "rb") as f:
            output = f.read(limits.output_bytes).decode(errors="replace")
        with os.fdopen(our_fds[1], "rb") as f:
            lines = [ln.split(" ", 1)[1] for ln in f.read(1 << 20).decode(errors="replace").splitlines()
                     if ln.startswith(nonce + " ")]
    passed = sum(ln.startswith("pass ") for ln in lines)
    violations = [ln[len("violation "):] for ln in lines if ln.startswith("violation ")]
    layers = next((ln.split(" ", 1)[1].split(",") for ln in lines if ln.startswith("layers ")), [])
    if status is None:
        if violations:
            status = "violation"
        elif "done" not in lines:
            status = "crashed"
        elif any(ln.startswith("load_error") for ln in lines):
            status = "load_error"
        else:
            status = "ok"
    return Result(passed, len(tests), status, output, violations, layers, time.monotonic() - start)


def _kill_tree(proc: subprocess.Popen, uid: int | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        _kill_uid(uid)  # anything of its uid that left the process group
    proc.wait()


def run_many(jobs: list[tuple[str, list[str]]], limits: Limits = Limits(), workers: int | None = None,
             progress: bool = False) -> list[Result]:
    """Run many (code, tests) pairs in parallel, one child per pair, `workers` at a time (default: all cores)."""
    workers = min(workers or os.cpu_count() or 1, 64)
    with ThreadPoolExecutor(workers) as pool:
        it = pool.map(lambda job: run_tests(job[0], job[1], limits), jobs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc="code_exec", unit="prog")
        return list(it)
