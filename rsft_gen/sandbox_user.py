"""Start bwrap as the host's nobody (uid 65534) when the parent runs as root.

    argv, stage = as_nobody(bwrap_argv, sources)   # then Popen(argv); stage.cleanup() when the sandbox closes

Why: started by root, bwrap maps the sandbox's uid to the host's uid 0. The program has no
capabilities, but every check that looks at the uid alone (sysctl files, root-only /proc
files such as /proc/slabinfo, root-owned files it might reach) sees root. Started as nobody,
bwrap's user namespace maps the sandbox's uid to the host's 65534, as for a normal user.

nobody cannot reach everything bwrap must bind: a Python under /root (mode 0700), a venv in a
private directory. So a launcher, still root, enters a mount namespace of its own (nothing it
mounts is seen by the host), binds each source onto an empty mount point in a 0755 staging
directory, drops to nobody and execs bwrap, which binds from the staging directory to the
usual paths. If nobody may not create a user namespace here, the caller falls back to
starting bwrap as root (logged).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

NOBODY = 65534
_BIND_OPTIONS = ("--ro-bind", "--bind", "--ro-bind-try", "--bind-try")

_LAUNCH = r"""
import ctypes, json, os, sys
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def check(rc, what):
    if rc != 0:
        raise SystemExit("sandbox launcher: %s: %s" % (what, os.strerror(ctypes.get_errno())))
check(libc.unshare(0x00020000), "unshare(CLONE_NEWNS)")
check(libc.mount(b"none", b"/", None, (1 << 18) | 16384, None), "make / private")  # MS_PRIVATE | MS_REC
for src, dst in spec["binds"]:
    check(libc.mount(src.encode(), dst.encode(), None, 4096 | 16384, None), "bind " + src)  # MS_BIND | MS_REC
n = spec["uid"]
os.setgroups([])
os.setresgid(n, n, n)
os.setresuid(n, n, n)
os.execv(spec["argv"][0], spec["argv"])
"""


def wanted() -> bool:
    return os.geteuid() == 0


def as_nobody(bwrap_argv: list[str]) -> tuple[list[str], tempfile.TemporaryDirectory]:
    """The launcher's argv for `bwrap_argv` (whose bind sources become staged copies), and the staging
    directory (remove it once the sandbox has ended)."""
    stage = tempfile.TemporaryDirectory(prefix="rsft_sandbox_stage_")
    os.chmod(stage.name, 0o755)
    argv, binds = list(bwrap_argv), []
    for i, arg in enumerate(bwrap_argv[:-1]):
        if arg in _BIND_OPTIONS and (i == 0 or bwrap_argv[i - 1] not in _BIND_OPTIONS):
            src = bwrap_argv[i + 1]
            point = os.path.join(stage.name, str(len(binds)))
            if os.path.isdir(src):
                os.mkdir(point, 0o755)
            else:
                open(point, "x").close()
                os.chmod(point, 0o644)
            binds.append((src, point))
            argv[i + 1] = point
    spec = {"binds": binds, "uid": NOBODY, "argv": argv}
    launcher = [os.path.realpath(sys.executable), "-I", "-S", "-c", _LAUNCH, json.dumps(spec)]
    return launcher, stage


def cleanup(stage: tempfile.TemporaryDirectory | None) -> None:
    if stage is not None:
        shutil.rmtree(stage.name, ignore_errors=True)  # only empty mount points: the binds were in another namespace
