"""The code that runs inside the sandbox: a fork server (zygote) and, per program, a fresh forked child.

    python -I -S -c "$(cat rsft_gen/sandbox_harness.py)" CONFIG_JSON      # what rsft_gen.sandbox starts, inside bwrap

Only this file's text enters the sandbox (no checkout, no run directory). The
zygote imports the harness modules and the common standard library once, then
for each program forks a child from that clean state; the zygote itself never
reads a job and never runs untrusted code. The child:

1. reads its job (the solution's code, the calls to evaluate, whole tests of
   the weak mode) from stdin, points stdout/stderr at a capped output file;
2. sets rlimits and installs a second seccomp filter that kills the process on
   fork/exec, sockets other than AF_UNIX, signals to other processes, ptrace,
   SysV IPC and the other calls in `_DENY` (recorded as a violation);
3. runs the code, evaluates each call and encodes its value as tagged JSON
   (plain data only; see `encode`), runs the weak tests, writes the result.

The zygote is pid 1 of bwrap's pid namespace (`--as-pid-1`): no bwrap reaper
holds the parent's pipes where a program could reopen them through /proc/1/fd,
and the kernel drops a program's SIGKILL/SIGSTOP to pid 1. It waits with a
wall-clock deadline, kills whatever is left (everything but itself), empties
the work directory and reports a framed header + result + output to the parent
on stdout. It knows
nothing of expected values: the parent compares (rsft_gen.test_parse).
"""

import json
import os
import select
import signal
import struct
import sys
import time

# x86_64 system call numbers (the filter is only installed on x86_64; see sandbox.py)
_DENY = {  # name: number; denied in both filters
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "unshare": 272,
    "setns": 308,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "acct": 163,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "syslog": 103,
    "personality": 135,
    "kcmp": 312,
    "quotactl": 179,
    "vhangup": 153,
    "settimeofday": 164,
    "clock_settime": 227,
    "adjtimex": 159,
    "lookup_dcookie": 212,
    "pidfd_open": 434,  # pidfds reach processes by pid without kill(): the filter could not check the target
    "pidfd_send_signal": 424,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "process_mrelease": 448,
}
_CHILD_DENY = {  # only for a program: no new processes, no IPC objects that outlive it, no network
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "execveat": 322,
    "tkill": 200,
    "shmget": 29,
    "semget": 64,
    "msgget": 68,
    "mq_open": 240,
}
_CLONE, _CLONE3, _KILL, _TGKILL, _SOCKET = 56, 435, 62, 234, 41
_SIGQUEUE, _TGSIGQUEUE, _MEMFD_CREATE = 129, 297, 319  # rt_(tg)sigqueueinfo signal like kill / tgkill
_NS_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_CLONE_THREAD, _AF_UNIX = 0x10000, 1
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS = 1, 38


def _ins(code, k, jt=0, jf=0):
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_filter(child_pid=None) -> bytes:
    """A classic-BPF seccomp program. Without child_pid: the sandbox-wide filter (EPERM on _DENY and on
    namespace-creating clone). With child_pid: the per-program filter (kill on _DENY + _CHILD_DENY)."""
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    deny = _KILL_PROCESS if child_pid else _ERRNO | _EPERM
    prog = [
        _ins(LD, 4),
        _ins(JEQ, 0xC000003E, 1, 0),
        _ins(RET, _KILL_PROCESS),  # arch must be x86_64
        _ins(LD, 0),
        _ins(JGE, 0x40000000, 0, 1),
        _ins(RET, _KILL_PROCESS),
    ]  # no x32 ABI
    numbers = sorted(_DENY.values()) + (sorted(_CHILD_DENY.values()) if child_pid else [])
    for nr in numbers:
        prog += [_ins(JEQ, nr, 0, 1), _ins(RET, deny)]
    prog += [_ins(JEQ, _CLONE3, 0, 1), _ins(RET, _ERRNO | _ENOSYS)]  # glibc falls back to clone, which we can inspect
    if child_pid:  # memfd pages are not counted by RLIMIT_AS: 64 fds x RLIMIT_FSIZE would double the memory limit
        prog += [_ins(JEQ, _MEMFD_CREATE, 0, 1), _ins(RET, _ERRNO | _EPERM)]

    def arg_rule(nr, test, value, if_true, if_false):  # every block returns, so the accumulator may be reused
        return [_ins(JEQ, nr, 0, 4), _ins(LD, 16), _ins(test, value, 0, 1), _ins(RET, if_true), _ins(RET, if_false)]

    if child_pid:
        prog += arg_rule(_CLONE, JSET, _CLONE_THREAD, _ALLOW, deny)  # threads yes, processes no
        prog += arg_rule(_KILL, JEQ, child_pid, _ALLOW, deny)  # signals only to itself
        prog += arg_rule(_TGKILL, JEQ, child_pid, _ALLOW, deny)
        prog += arg_rule(_SIGQUEUE, JEQ, child_pid, _ALLOW, deny)
        prog += arg_rule(_TGSIGQUEUE, JEQ, child_pid, _ALLOW, deny)
        prog += arg_rule(_SOCKET, JEQ, _AF_UNIX, _ALLOW, deny)
    else:
        prog += arg_rule(_CLONE, JSET, _NS_FLAGS, deny, _ALLOW)
    return b"".join(prog + [_ins(RET, _ALLOW)])


def install_filter(libc, ctypes, prog: bytes) -> bool:
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    return libc.prctl(22, 2, ctypes.byref(Fprog(len(prog) // 8, prog)), 0, 0) == 0  # PR_SET_SECCOMP, FILTER


def encode(v, depth=0):
    """A value as tagged JSON: ints/strs/bools/None as themselves, floats ["f", repr], lists ["l", ...], ...
    Anything without a plain form becomes ["o", type name, repr], which equals nothing in the parent."""
    import numbers

    if depth > 200:
        raise ValueError("value nested too deeply to send back")
    if v is None or type(v) in (bool, str):
        return v
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, numbers.Integral):
        i = int(v)
        return i if -(2**53) < i < 2**53 else ["i", hex(i)]
    if isinstance(v, numbers.Real):
        return ["f", repr(float(v))]
    if isinstance(v, numbers.Complex):
        c = complex(v)
        return ["c", repr(c.real), repr(c.imag)]
    if isinstance(v, (bytes, bytearray)):
        return ["y", bytes(v).hex()]
    for kind, tag in ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "fs")):
        if isinstance(v, kind):
            return [tag] + [encode(x, depth + 1) for x in kind.__iter__(v)]
    if isinstance(v, dict):
        return ["d"] + [[encode(k, depth + 1), encode(x, depth + 1)] for k, x in dict.items(v)]
    try:
        text = repr(v)[:200]
    except BaseException:
        text = "?"
    return ["o", type(v).__name__, text]


_PRELOAD = (
    "re",
    "itertools",
    "functools",
    "collections",
    "heapq",
    "math",
    "hashlib",
    "random",
    "string",
    "typing",
    "traceback",
    "logging",
    "bisect",
    "statistics",
    "fractions",
    "decimal",
    "datetime",
    "copy",
    "operator",
    "numbers",
    "array",
    "textwrap",
    "unicodedata",
    "linecache",
    "shutil",
)
_RESULT_CAP = 8 << 20


def _frame(header: dict, *blobs: bytes) -> bytes:
    head = json.dumps(dict(header, sizes=[len(b) for b in blobs])).encode()
    return struct.pack(">I", len(head)) + head + b"".join(blobs)


def _write_all(fd, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return b""
        out += chunk
    return out


def _empty(directory: str) -> None:
    import shutil

    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            for root, dirs, _ in os.walk(path):  # a program may have removed its own permissions
                for d in dirs:
                    os.chmod(os.path.join(root, d), 0o700)
            os.chmod(path, 0o700)
            shutil.rmtree(path)
        else:
            os.unlink(path)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    limits, root = cfg["limits"], cfg["workroot"]
    import ctypes
    import importlib

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0: a child may not read or trace the zygote through /proc
    layers = list(cfg["layers"])
    if cfg["seccomp"] and cfg["own_base_filter"] and install_filter(libc, ctypes, seccomp_filter()):
        layers.append("seccomp")
    if cfg["pidns"] and os.getpid() != 1:
        raise SystemExit("sandbox harness: expected to be pid 1 in a fresh pid namespace (bwrap --as-pid-1)")
    if cfg["site_dirs"]:
        import site

        for d in cfg["site_dirs"]:
            site.addsitedir(d)
    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    os.umask(0o077)
    _write_all(1, _frame({"ready": True, "layers": layers + ["rlimits", "fork_per_program"]}))
    out_path, work = os.path.join(root, ".output"), os.path.join(root, "work")
    while True:
        os.mkdir(work, 0o700)
        out_fd = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _child(w, out_fd, work, limits, cfg, libc, ctypes)
        os.close(w)
        if not os.read(r, 1):  # the child saw the parent close stdin: shut down
            os.waitpid(pid, 0)
            return
        data, timed_out = _collect(r, time.monotonic() + limits["timeout_s"])
        if cfg["pidns"]:
            try:
                os.kill(-1, signal.SIGKILL)  # pid namespace: every process but us (pid 1)
            except ProcessLookupError:
                pass
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
        os.close(r)
        output = os.pread(out_fd, limits["output_bytes"], 0)
        os.close(out_fd)
        _empty(root)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        _write_all(1, _frame({"timeout": timed_out, "signal": sig, "exit": code}, data, output))


def _collect(r, deadline):
    data, timed_out = bytearray(), False
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            return bytes(data), True
        chunk = os.read(r, 1 << 16)
        if not chunk:
            return bytes(data), timed_out
        if len(data) < _RESULT_CAP:
            data += chunk[: _RESULT_CAP - len(data)]


def _capped_stream(fd: int, keep: int, line_buffering: bool):
    """A text stream on `fd` that writes the first `keep` bytes and drops the rest while reporting them written:
    a correct program that prints more than RLIMIT_FSIZE allows must not fail (only so much comes back anyway)."""
    import io

    class Capped(io.RawIOBase):
        left = keep

        def writable(self):
            return True

        def write(self, b):
            n = len(b)
            if Capped.left > 0:
                _write_all(fd, bytes(b[: Capped.left]))
                Capped.left -= min(n, Capped.left)
            return n

    return io.TextIOWrapper(io.BufferedWriter(Capped()), "utf-8", "backslashreplace", line_buffering=line_buffering)


def _child(res, out_fd, work, limits, cfg, libc, ctypes):
    try:
        n = struct.unpack(">Q", _read_exact(0, 8) or b"\0" * 8)[0]
        job = _read_exact(0, n) if n else b""
        if not job:
            os._exit(3)
        _write_all(res, b"S")
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        for fd in (null, out_fd):
            os.close(fd)
        sys.stdout = sys.__stdout__ = _capped_stream(1, limits["output_bytes"], False)
        sys.stderr = sys.__stderr__ = _capped_stream(2, limits["output_bytes"], True)
        os.chdir(work)
        import resource

        mb = 1 << 20
        for lim, v in (
            (resource.RLIMIT_AS, limits["memory_mb"] * mb),
            (resource.RLIMIT_CPU, int(limits["timeout_s"]) + 1),
            (resource.RLIMIT_FSIZE, limits["file_mb"] * mb),
            (resource.RLIMIT_NOFILE, limits["max_open_files"]),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(lim, (v, v))
        if cfg["seccomp"] and not install_filter(libc, ctypes, seccomp_filter(os.getpid())):
            os._exit(4)
        job = json.loads(job)
    except BaseException:
        os._exit(5)
    _write_all(res, _run(job).encode())
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(0)


def _run(job) -> str:
    """Untrusted from here on: everything below may be patched by the solution; the parent trusts none of it."""
    import traceback

    ns = {"__name__": "__solution__"}
    report = {"load": None, "calls": [], "tests": []}
    try:
        exec(compile(job["code"], "<solution>", "exec"), ns)
    except BaseException as e:
        report["load"] = f"{type(e).__name__}: {e}"[:500]
        traceback.print_exc()
        return json.dumps(report)
    for i, src in enumerate(job["calls"]):
        try:
            report["calls"].append(["ok", encode(eval(compile(src, f"<call {i}>", "eval"), ns))])
        except BaseException as e:
            report["calls"].append(["err", f"{type(e).__name__}: {e}"[:300]])
    for i, src in enumerate(job["tests"]):
        try:
            exec(compile(src, f"<test {i}>", "exec"), dict(ns))
            report["tests"].append(True)
        except BaseException as e:
            report["tests"].append(False)
            print(f"test {i} failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
    return json.dumps(report)


if __name__ == "__main__":
    main()
