"""Run untrusted, model-written Python against tests: contained by the OS (bubblewrap), judged by the parent.

    from rsft_gen.sandbox import Limits, run_many
    results = run_many([("def add(a, b): return a + b", ["assert add(1, 2) == 3"])], Limits(timeout_s=5))
    results[0].fraction   # 1.0

Containment is the operating system's job, through bubblewrap (`bwrap`, Debian
package `bubblewrap`; Flatpak's sandbox). Each worker starts one sandbox:

- a fresh mount namespace holding, read-only, only the Python runtime (the
  interpreter's prefix and the shared-library directories), fresh /proc and
  /dev, a private size-capped tmpfs on /tmp, and nothing else: no /etc, no
  home, no checkout, no run directory; the root and /dev are read-only;
- its own user (uid 65534 inside, no capabilities, no nested user namespaces),
  pid, network (no interfaces), IPC, UTS and cgroup namespaces; a new session
  (no terminal injection); killed when the worker that started it dies;
- a seccomp filter (x86_64) refusing ptrace, mounts, namespaces, keyrings,
  bpf, io_uring, open_by_handle_at and similar.

Inside, a fork server (rsft_gen/sandbox_harness.py) forks a fresh child per
program from a state no program has touched; that child adds rlimits (memory,
CPU, file size, open files, no core) and a second seccomp filter that kills
it on fork/exec, non-unix sockets, signals to other processes or SysV IPC
(status "violation"). After each program everything else in the sandbox is
killed and /tmp emptied. Wall-clock timeout per program; a sandbox that
misbehaves is killed and replaced.

The expected answers never enter the sandbox: rsft_gen.test_parse cuts each
test into calls (sent) and checks (kept); the child returns the calls' values
as tagged JSON, and this process compares. Tests of other shapes run whole
inside the sandbox, a weaker mode a program could fake; `Result.unparsed`
counts them.

No bwrap: `SandboxUnavailable` with one line saying what to install, unless
`Limits(isolation="none")` asks for plain child processes (rlimits + seccomp
only; the program can read the host's files), which is logged as a warning on
every call.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rsft_gen import sandbox_harness, sandbox_user
from rsft_gen.test_parse import ParsedTest, Raised, check_test, decode, parse_test

log = logging.getLogger(__name__)
_HARNESS = Path(sandbox_harness.__file__).read_text()
_SANDBOX_UID = 65534  # "nobody" inside the user namespace


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create its namespaces here."""


@dataclass
class Limits:
    timeout_s: float = 5.0  # wall clock per program (its code + all its calls)
    memory_mb: int = 1024  # RLIMIT_AS
    file_mb: int = 16  # RLIMIT_FSIZE: the largest file (and total output) it may write
    tmpfs_mb: int = 64  # size of its private /tmp
    max_open_files: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 10_000  # how much of stdout+stderr comes back
    site_packages: bool = False  # True: the interpreter's site-packages (e.g. numpy), read-only, are importable
    isolation: str = "bwrap"  # "bwrap", or "none": plain child processes, no OS sandbox (weaker; logged)
    audit_hook: bool = False  # kept for old callers; nothing relies on an audit hook any more


@dataclass
class Result:
    passed: int
    total: int
    status: str  # ok | timeout | load_error | violation | crashed
    output: str = ""
    violations: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unparsed: int = 0  # tests run whole inside the sandbox (their pass/fail came from the program's process)

    @property
    def fraction(self) -> float:
        if self.status != "ok" or self.total == 0:
            return 0.0
        return self.passed / self.total


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


def _runtime_binds() -> list[str]:
    """bwrap arguments for a read-only view of just the interpreter, its stdlib and shared libraries."""
    exe = os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    stdlib = os.path.realpath(os.path.dirname(os.__file__))  # holds lib-dynload too; not the venv's lib dir
    paths = [stdlib, exe] + ([prefix] if prefix != "/usr" else [])  # a system Python: not all of /usr
    arch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    args: list[str] = []
    for top in ("/lib", "/lib64", "/bin"):
        if os.path.islink(top):  # merged /usr: keep the symlinks the loader paths go through
            args += ["--symlink", os.readlink(top), top]
    for d in (f"/lib/{arch}", f"/usr/lib/{arch}", "/lib64", "/usr/lib64"):
        if os.path.isdir(d):
            paths.append(os.path.realpath(d))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and os.path.isdir(libdir):
        paths.append(os.path.realpath(libdir))  # libpython for shared builds
    seen: set[str] = set()
    for p in sorted(paths, key=len):  # parents first; their subdirectories need no bind of their own
        if p not in seen and not any(p.startswith(s + "/") for s in seen) and os.path.exists(p):
            seen.add(p)
            args += ["--ro-bind", p, p]
    return args


def _bwrap_argv(
    bwrap: str, limits: Limits, seccomp_fd: int | None, site_dirs: list[str]
) -> tuple[list[str], list[str]]:
    runtime = _runtime_binds()
    # --as-pid-1: no bwrap reaper as pid 1; it kept the parent's pipes as its fds 0-2, which a program could
    # reopen through /proc/1/fd/N (same uid, dumpable) to forge result frames and shift every later result by one
    argv = [bwrap, *"--unshare-all --unshare-user --disable-userns --die-with-parent --as-pid-1 --new-session".split()]
    argv += ["--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID), "--hostname", "sandbox", "--cap-drop", "ALL"]
    argv += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    argv += ["--setenv", "HOME", "/tmp"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp"]
    argv += runtime
    for host, inside in zip(site_dirs, _site_mounts(site_dirs)):
        argv += ["--ro-bind", host, inside]
    # /proc read-only: run by root, the sandbox's uid is the host's uid 0 (no capabilities), and sysctl files check
    # only the uid, so a writable /proc let a program set host sysctls (kernel.core_pattern, fs.file-max, ...)
    argv += ["--remount-ro", "/proc", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    layers = ["bwrap", "mountns", "userns", "pidns", "netns", "ipcns", "no_caps", "new_session", "die_with_parent"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
        layers.append("seccomp")
    return argv, layers


class _Sandbox:
    """One bwrap'd fork server; `run` sends one job and returns (header, result bytes, output bytes)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.proc: subprocess.Popen | None = None
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.stage: tempfile.TemporaryDirectory | None = None  # bwrap started as nobody (sandbox_user)
        self.layers: list[str] = []

    def start(self) -> None:
        lim = self.limits
        use_seccomp = platform.machine() == "x86_64"
        site_dirs = [os.path.realpath(d) for d in _site_dirs()] if lim.site_packages else []
        cfg = {"limits": asdict(lim), "seccomp": use_seccomp, "site_dirs": site_dirs}
        pass_fds: tuple[int, ...] = ()
        nobody = False  # bwrap started as the host's nobody (sandbox_user), not as root
        if lim.isolation == "bwrap":
            bwrap = bwrap_path()
            if bwrap is None:
                raise SandboxUnavailable(
                    "code_exec: bubblewrap (bwrap) is not installed; install the Debian/Ubuntu package `bubblewrap` "
                    "(`make install` does so as root), or set the reward kwarg isolation: none to run programs "
                    "without an OS sandbox (weaker)."
                )
            filt = None
            if use_seccomp:
                filt, w = os.pipe()
                sandbox_harness._write_all(w, sandbox_harness.seccomp_filter())
                os.close(w)
                pass_fds = (filt,)
            argv, layers = _bwrap_argv(bwrap, lim, filt, site_dirs)
            nobody = sandbox_user.wanted() and not _NOBODY_REFUSED
            # whose uid the host sees: nobody (started so by root), root's (nobody refused), or the parent's own
            layers.append("host_uid_nobody" if nobody else "host_uid_root" if os.geteuid() == 0 else "host_uid_self")
            cfg.update(workroot="/tmp", pidns=True, own_base_filter=False, layers=layers)
            cfg.update(site_dirs=_site_mounts(site_dirs))
            cwd = "/"
        elif lim.isolation == "none":
            self.tmp = tempfile.TemporaryDirectory(prefix="rsft_sandbox_")
            cfg.update(workroot=self.tmp.name, pidns=False, own_base_filter=True, layers=["process"])
            argv, cwd = [], self.tmp.name
        else:
            raise ValueError(f"Limits.isolation is {lim.isolation!r}; use 'bwrap' (default) or 'none'.")
        argv += [os.path.realpath(sys.executable), "-I", "-S", "-c", _HARNESS, json.dumps(cfg)]
        if nobody:
            argv, self.stage = sandbox_user.as_nobody(argv)
        self.err = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.err,
                pass_fds=pass_fds,
                start_new_session=True,
                cwd=cwd,
                bufsize=0,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        finally:
            for fd in pass_fds:
                os.close(fd)
        header, _ = self._read(time.monotonic() + 60)
        if not header or not header.get("ready"):
            self.err.seek(0)
            why = self.err.read(2000).decode(errors="replace").strip().splitlines()
            self.close()
            if nobody:
                _refuse_nobody(why)
                return self.start()
            raise SandboxUnavailable(
                f"code_exec: the sandbox did not start ({' | '.join(why[-3:]) or 'no message'}); "
                "if bwrap says it cannot create a user namespace, allow unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)."
            )
        self.layers = header["layers"]

    def run(self, job: dict):
        """Send a job; None when the sandbox died or stalled (it is then closed)."""
        body = json.dumps(job).encode()
        try:
            sandbox_harness._write_all(self.proc.stdin.fileno(), struct.pack(">Q", len(body)) + body)
        except OSError:
            self.close()
            return None
        header, blobs = self._read(time.monotonic() + self.limits.timeout_s + 30)
        if header is None:
            self.close()
            return None
        return header, blobs[0], blobs[1]

    def _read(self, deadline: float):
        fd = self.proc.stdout.fileno()

        def exact(n: int) -> bytes | None:
            out = b""
            while len(out) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return None
                chunk = os.read(fd, min(n - len(out), 1 << 20))
                if not chunk:
                    return None
                out += chunk
            return out

        size = exact(4)
        head = size and exact(struct.unpack(">I", size)[0])
        if not head:
            return None, []
        header = json.loads(head)
        blobs = [exact(n) if n else b"" for n in header.pop("sizes")]
        if any(b is None for b in blobs):
            return None, []
        return header, blobs

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()  # the fork server shuts down on EOF
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        if self.tmp is not None:
            self.tmp.cleanup()
            self.tmp = None
        sandbox_user.cleanup(self.stage)
        self.stage = None


_NOBODY_REFUSED = False  # bwrap could not start as nobody here (no unprivileged user namespaces): start it as root


def _refuse_nobody(why: list[str]) -> None:
    global _NOBODY_REFUSED
    _NOBODY_REFUSED = True
    log.warning(
        "code_exec: bwrap could not start as nobody (%s); starting it as root, so the sandbox's uid is the host's "
        "uid 0 without capabilities. Allow unprivileged user namespaces to avoid this.",
        " | ".join(why[-2:]) or "no message",
    )


def _site_mounts(site_dirs: list[str]) -> list[str]:
    """Where the sandbox sees each site directory: outside its /tmp, whatever the host path. A venv under /tmp
    (a fresh clone in /tmp) bound at its own path would put mount points inside the private /tmp, which the
    fork server could then neither empty between programs nor keep clean."""
    return [f"/site-packages/{i}" for i in range(len(site_dirs))]


def _site_dirs() -> list[str]:
    import site

    return [d for d in site.getsitepackages() if os.path.isdir(d)]


def _judge(tests: list[str], job_calls: list[list[int]], parsed: list[ParsedTest], replies, limits, layers, seconds):
    """One Result from the sandbox's replies: the calls' run, then (if any) the weak tests' run."""
    unparsed = sum(p.calls is None for p in parsed)
    output = "".join(r[2].decode(errors="replace") for r in replies if r is not None)

    def res(status, passed=0, notes="", violations=()):
        out = (output + notes)[: limits.output_bytes]
        return Result(passed, len(tests), status, out, list(violations), layers, seconds, unparsed)

    calls, weak = [], []
    for reply in replies:
        if reply is None:
            return res("crashed", notes="sandbox stopped answering")
        header, data, _ = reply
        if header["timeout"] or header["signal"] == signal.SIGXCPU:
            return res("timeout")
        if header["signal"] == signal.SIGSYS:
            return res("violation", violations=["a forbidden system call (seccomp killed the program)"])
        try:
            report = json.loads(data)
            if report["load"] is not None:
                return res("load_error", notes=f"solution failed to load: {report['load']}\n")
            calls += [decode(v) if kind == "ok" else Raised(str(v)) for kind, v in report["calls"]]
            weak += [bool(x) for x in report["tests"]]
        except Exception as e:  # no report (it exited or was killed early) or a malformed one
            why = f"signal {header['signal']}" if header["signal"] else f"exit {header['exit']}"
            return res("crashed", notes=f"\nno valid result ({why}; {type(e).__name__})\n")
    if len(calls) != sum(len(c) for c in job_calls) or len(weak) != unparsed:
        return res("crashed", notes="\nno valid result (wrong number of results)\n")
    passed, notes, weak_iter = 0, [], iter(weak)
    for i, (p, idx) in enumerate(zip(parsed, job_calls)):
        ok = next(weak_iter) if p.calls is None else check_test(p, [calls[j] for j in idx])
        passed += ok
        if not ok and p.calls is not None:
            errors = [str(calls[j].error) for j in idx if isinstance(calls[j], Raised)]
            notes.append(f"test {i} failed: {errors[0] if errors else 'AssertionError'}\n")
    return res("ok", passed, "".join(notes))


def _finished(reply) -> bool:
    if reply is None or reply[0] != {"timeout": False, "signal": None, "exit": 0}:
        return False
    try:
        return json.loads(reply[1])["load"] is None
    except Exception:
        return False


def _job(code: str, tests: list[str]):
    """The sandbox runs for one program: its calls, and its weak tests in a second run of their own when it has
    both (a weak test's source holds expected values, often those of the split tests too, and a program can read
    whatever its process was sent)."""
    parsed = [parse_test(t) for t in tests]
    calls, job_calls, weak = [], [], []
    for p in parsed:
        if p.calls is None:
            weak.append(p.source)
            job_calls.append([])
        else:
            job_calls.append(list(range(len(calls), len(calls) + len(p.calls))))
            calls.extend(p.calls)
    runs = [{"code": code, "calls": calls, "tests": []}] if calls else []
    runs += [{"code": code, "calls": [], "tests": weak}] if weak or not calls else []
    return runs, job_calls, parsed


def run_many(
    jobs: list[tuple[str, list[str]]], limits: Limits = Limits(), workers: int | None = None, progress: bool = False
) -> list[Result]:
    """Run many (code, tests) pairs, one sandbox (fork server) per worker (default: all cores)."""
    if limits.isolation == "none":
        log.warning(
            "code_exec: isolation=none: programs run as plain child processes WITHOUT an OS sandbox "
            "(they can read this machine's files); use isolation=bwrap where bubblewrap is installed"
        )
    results: list[Result | None] = [None] * len(jobs)
    if not jobs:
        return []
    todo: queue.Queue = queue.Queue()
    for i in range(len(jobs)):
        todo.put(i)
    errors: list[BaseException] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="code_exec", unit="prog")

    def worker() -> None:
        box = _Sandbox(limits)
        try:
            while not errors:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                if box.proc is None:
                    box.start()
                start = time.monotonic()
                runs, job_calls, parsed = _job(*jobs[i])
                replies = []
                for k, run in enumerate(runs):
                    replies.append(box.run(run))
                    if replies[-1] is None or (k + 1 < len(runs) and not _finished(replies[-1])):
                        break  # a crash, a timeout or a load error already decides it: no second run
                took = time.monotonic() - start
                results[i] = _judge(jobs[i][1], job_calls, parsed, replies, limits, box.layers, took)
                if replies[-1] is None or results[i].status in ("timeout", "crashed", "violation"):
                    box.close()  # anything unusual: a fresh sandbox for the next program
                if bar is not None:
                    bar.update()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
        finally:
            box.close()

    n = max(1, min(workers or os.cpu_count() or 1, 64, len(jobs)))
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if bar is not None:
        bar.close()
    if errors:
        raise errors[0]
    return results


def run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> Result:
    """Run `code` then its tests in a fresh sandbox; see the module docstring."""
    return run_many([(code, tests)], limits, workers=1)[0]
