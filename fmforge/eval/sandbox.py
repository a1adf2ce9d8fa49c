"""Run untrusted Python (a model's completion and its tests) in a separate process.

Layers, each of which fails closed:
- a fresh temporary working directory, removed afterwards; HOME and TMPDIR point into it;
- resource limits set in the child before exec: address space (memory), CPU seconds,
  file size, no core dumps;
- no network: a new user + network namespace (`unshare -rn`) where the kernel allows
  it, so the process has only a loopback that is down; everywhere, an audit hook
  (PEP 578, cannot be removed from Python) that refuses sockets other than AF_UNIX;
- the same hook refuses writes, renames and removals outside the working directory,
  starting processes, and ctypes (the way around the hook);
- a wall-clock limit: the child leads its own process group and the whole group is
  SIGKILLed on timeout.
Output goes to files inside the sandbox (capped by the file-size limit), never into the
evaluator's memory unbounded.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache

GUARD = r'''
import os as _os, sys as _sys
def _fmforge_guard():
    import socket as _socket
    root = _os.path.realpath(_os.getcwd())
    write_flags = _os.O_WRONLY | _os.O_RDWR | _os.O_APPEND | _os.O_CREAT | _os.O_TRUNC
    realpath, fspath, sep = _os.path.realpath, _os.fspath, _os.sep

    def inside(p):
        if isinstance(p, int):
            return True  # a file descriptor already open
        try:
            rp = realpath(fspath(p))
        except (TypeError, ValueError):
            return False
        return rp == root or rp.startswith(root + sep)

    paths_of = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.replace": 2, "os.link": 2,
                "os.symlink": 2, "os.truncate": 1, "os.chmod": 1, "os.chown": 1, "os.utime": 1,
                "shutil.rmtree": 1, "shutil.copyfile": 2, "shutil.move": 2}
    blocked = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "os.kill", "os.killpg", "pty.spawn", "webbrowser.open")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or bool((flags or 0) & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: no writing outside the working directory ({path!r})")
        elif event in paths_of:
            for p in args[:paths_of[event]]:
                if not inside(p):
                    raise PermissionError(f"sandbox: {event} outside the working directory ({p!r})")
        elif event == "socket.__new__":
            if args[1] != _socket.AF_UNIX:
                raise PermissionError("sandbox: no network")
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"):
            raise PermissionError("sandbox: no network")
        elif event.startswith(blocked) or event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed")

    _sys.addaudithook(hook)
_fmforge_guard()
del _fmforge_guard, _os, _sys
'''


@dataclass
class ExecResult:
    status: str  # passed | failed | timeout
    returncode: int | None
    seconds: float
    stderr: str  # its tail

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether `unshare -rn` (a new user + network namespace) works for this user here."""
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _limits(memory_mb: int, cpu_s: int, file_mb: int):
    def apply():
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(program: str, timeout_s: float = 5.0, memory_mb: int = 1024, file_mb: int = 16) -> ExecResult:
    """Run `program` as a Python script in the sandbox; passed when it exits 0 in time."""
    import time

    work = tempfile.mkdtemp(prefix="fmforge-sandbox-")
    try:
        with open(os.path.join(work, "program.py"), "w", encoding="utf-8") as f:
            f.write(GUARD + "\n" + program)
        cmd = [sys.executable, "-I", "-B", "program.py"]
        if network_namespace_available():
            cmd = [shutil.which("unshare"), "-rn", *cmd]
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        t0 = time.monotonic()
        with open(os.path.join(work, "out.txt"), "wb") as out, open(os.path.join(work, "err.txt"), "wb") as err:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, close_fds=True,
                                    preexec_fn=_limits(memory_mb, int(timeout_s) + 1, file_mb))
            try:
                rc = proc.wait(timeout=timeout_s)
                status = "passed" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                rc, status = None, "timeout"
            finally:  # the whole group: what the program started dies with it
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        secs = time.monotonic() - t0
        with open(os.path.join(work, "err.txt"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2000))
            tail = f.read().decode("utf-8", "replace")
        return ExecResult(status, rc, secs, tail)
    finally:
        shutil.rmtree(work, ignore_errors=True)
