"""Run the `tritonserver` binary that the nvidia-pytriton wheel ships against a model repository.

PyTriton's own `Triton.bind` is not used: when its infer function raises, every request of the
batch fails, and a bad request must fail alone. The wheel's binary, its Python backend and the
backend stub for this interpreter are assembled into a backend directory instead.

Environment the stub needs (measured on this machine):
- the stub was linked against the *system* libpython3.X.so; when this interpreter has its own
  libpython, LD_LIBRARY_PATH must point at it, or the stub runs this interpreter's stdlib on
  another build of the C core (`RLock`/`_recursion_count` errors, missing site-packages);
- the stub finds sys.prefix from `python3` on PATH, so this interpreter's bin/ goes first;
- the stub ignores PYTHONPATH: extra import paths travel in STYLEGEN_TRT_PYTHONPATH, which the
  generated model.py files read;
- a copied stub loses its RPATH to the wheel's bundled libraries (libcudart...): they go on
  LD_LIBRARY_PATH too.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Optional, Sequence

from stylegen_trt.errors import UserError

log = logging.getLogger(__name__)

INSTALL_HINT = 'install stylegen-trt[serve] (pip install "stylegen-trt[serve]")'
DEFAULT_HOST = "127.0.0.1"
PYTHONPATH_ENV = "STYLEGEN_TRT_PYTHONPATH"
_ESCAPED_NEWLINE = "\\n"  # Triton's log lines carry a model's traceback with escaped newlines


@dataclass(frozen=True)
class TritonDist:
    """The pieces of Triton inside the nvidia-pytriton wheel."""

    binary: Path
    python_backend: Path  # libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this interpreter's version
    libs: Path  # the wheel's bundled shared libraries


def locate_triton() -> TritonDist:
    """Find the wheel's tritonserver, Python backend and stub; a one-line UserError if absent."""
    spec = importlib.util.find_spec("pytriton")  # finds without importing pytriton (slow, pulls in much)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"Triton Inference Server is not installed: {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0])
    dist_dir = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    dist = TritonDist(binary=dist_dir / "bin" / "tritonserver", python_backend=dist_dir / "backends" / "python",
                      stub=dist_dir / "python_backend_stubs" / version / "triton_python_backend_stub",
                      libs=root.parent / "nvidia_pytriton.libs")
    if not dist.binary.is_file() or not (dist.python_backend / "libtriton_python.so").is_file():
        raise UserError(f"the installed nvidia-pytriton has no tritonserver binary at {dist.binary}: {INSTALL_HINT}")
    if not dist.stub.is_file():
        raise UserError(f"nvidia-pytriton ships no Python-backend stub for Python {version}: "
                        "use Python 3.8-3.13, or NVIDIA's tritonserver container with `stylegen-trt triton-repo`")
    return dist


def prepare_backend_dir(dist: TritonDist, dest: Path) -> Path:
    """A --backend-directory: the wheel's python backend plus the stub for this interpreter."""
    python_dir = Path(dest) / "python"
    shutil.copytree(dist.python_backend, python_dir, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    shutil.copy2(dist.stub, python_dir / "triton_python_backend_stub")
    return Path(dest)


def own_libpython() -> Optional[Path]:
    """This interpreter's shared libpython, or None (a static build: nothing to point the stub at)."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not soname:
        return None
    path = Path(libdir) / soname
    return path if path.is_file() else None


def stub_libpython(stub: Path, env: dict[str, str]) -> Optional[Path]:
    """The libpython the dynamic loader gives ``stub`` under ``env`` (None when ldd cannot say)."""
    try:
        out = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, timeout=20, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"libpython\S*\s+=>\s+(\S+)", out)
    return Path(match.group(1)) if match and match.group(1) != "not" else None


def libpython_fix(stub: Path, env: dict[str, str]) -> Optional[str]:
    """The directory to put first on LD_LIBRARY_PATH so the stub runs this interpreter's libpython
    (None when it already does, or this interpreter has no shared libpython)."""
    own = own_libpython()
    if own is None:
        log.warning("this Python has no shared libpython; the Triton stub uses the system's, "
                    "which must be the same build for models to load")
        return None
    resolved = stub_libpython(stub, env)
    if resolved is not None and resolved.resolve() == own.resolve():
        return None
    log.info("Triton's Python stub would load %s, not this interpreter's %s: LD_LIBRARY_PATH=%s",
             resolved or "an unknown libpython", own, own.parent)
    return str(own.parent)


def server_env(dist: TritonDist, python_path: Sequence[str | Path] = ()) -> dict[str, str]:
    """The environment tritonserver (and so the stub) runs in; see the module docstring for why."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    ld = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    ld.append(str(dist.libs))
    fix = libpython_fix(dist.stub, {**env, "LD_LIBRARY_PATH": os.pathsep.join(ld)})
    if fix is not None:
        ld.insert(0, fix)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(ld)
    package_root = Path(__file__).resolve().parents[2]  # so a checkout that is not pip-installed works too
    paths = [str(Path(p).resolve()) for p in python_path] + [str(package_root)]
    env[PYTHONPATH_ENV] = os.pathsep.join(dict.fromkeys(paths))
    return env


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def free_ports(host: str = DEFAULT_HOST, count: int = 3) -> list[int]:
    """Ports free on ``host`` now (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]


def server_command(dist: TritonDist, repo: Path, backend_dir: Path, ports: Ports, host: str,
                   exit_timeout_s: int) -> list[str]:
    return [str(dist.binary), "--model-repository", str(Path(repo).resolve()),
            "--backend-directory", str(backend_dir),
            "--http-address", host, "--http-port", str(ports.http),
            "--grpc-address", host, "--grpc-port", str(ports.grpc),
            "--metrics-address", host, "--metrics-port", str(ports.metrics),
            "--exit-timeout-secs", str(exit_timeout_s),
            "--disable-auto-complete-config",  # our configs are complete; saves a stub start per model
            "--strict-readiness", "true", "--exit-on-error", "true", "--log-verbose", "0"]


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies, so a killed `serve` leaves no stray server."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


@dataclass
class TritonProcess:
    """A started tritonserver: its process, ports, and the tail of its log."""

    process: subprocess.Popen
    ports: Ports
    host: str
    workdir: Path
    log_path: Optional[Path] = None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    _pump: Optional[threading.Thread] = None

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.ports.metrics}/metrics"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if self._pump is not None:
                    self._pump.join(timeout=5)  # read the log to its end first
                raise UserError(f"Triton server exited ({self.process.returncode}) before it was ready: {self.last_error()}")
            if self.is_ready():
                return
            time.sleep(0.1)
        raise UserError(f"Triton server not ready after {timeout_s:.0f} s: {self.last_error()}")

    def last_error(self) -> str:
        """The most telling line of the log: a model's load failure, else Triton's last error line."""
        lines = list(self.tail)
        for line in reversed(lines):
            match = re.search(r"failed to load '([^']+)' version \d+: (.*)", line)
            if match:  # the message ends where Triton's escaped traceback (\n\nAt:) starts
                message = match.group(2).split(_ESCAPED_NEWLINE)[0].strip('"')
                return f"model {match.group(1)!r} failed to load: {message[:300]}"
        for line in reversed(lines):  # Triton's error lines start with E<mmdd>
            if re.match(r"E\d{4} ", line) or line.startswith("error:"):
                return line.strip()[:300]
        return (lines[-1].strip()[:300] if lines else "no output") + " (see the server log)"

    def terminate(self) -> None:
        """SIGTERM: Triton stops taking requests, drains those in flight, then exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        """Drain and stop; SIGKILL after ``timeout_s``. Returns the exit code."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("Triton server did not exit within %.0f s of SIGTERM: killing it", timeout_s)
            self.process.kill()
            self.process.wait(timeout=30)
        if self._pump is not None:
            self._pump.join(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode


def start_server(repo: Path, ports: Ports, *, host: str = DEFAULT_HOST, exit_timeout_s: int = 30,
                 python_path: Sequence[str | Path] = (), log_path: Optional[Path] = None) -> TritonProcess:
    """Start tritonserver on ``repo`` (not yet ready: call wait_ready). Its output goes to ``log_path``,
    or to this process's stderr."""
    repo = Path(repo)
    if not (repo / "stylegen" / "config.pbtxt").is_file():
        raise UserError(f"{repo} is not a model repository with a `stylegen` model: write one with `stylegen-trt triton-repo`")
    dist = locate_triton()
    workdir = Path(tempfile.mkdtemp(prefix="stylegen-trt-triton-"))
    try:
        backend_dir = prepare_backend_dir(dist, workdir / "backends")
        env = server_env(dist, python_path)
        cmd = server_command(dist, repo, backend_dir, ports, host, exit_timeout_s)
        log.info("starting %s", " ".join(cmd))
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    server = TritonProcess(process=proc, ports=ports, host=host, workdir=workdir, log_path=log_path)
    sink: IO[bytes] = open(log_path, "ab") if log_path is not None else sys.stderr.buffer
    server._pump = threading.Thread(target=_pump_output, args=(proc, sink, server.tail, log_path is not None),
                                    name="tritonserver-log", daemon=True)
    server._pump.start()
    return server


def _pump_output(proc: subprocess.Popen, sink: IO[bytes], tail: collections.deque, close: bool) -> None:
    try:
        for line in iter(proc.stdout.readline, b""):
            tail.append(line.decode("utf-8", "replace"))
            with contextlib.suppress(OSError, ValueError):
                sink.write(line)
                sink.flush()
    finally:
        proc.stdout.close()
        if close:
            sink.close()


@contextlib.contextmanager
def running_server(repo: Path, *, host: str = DEFAULT_HOST, python_path: Sequence[str | Path] = (),
                   log_path: Optional[Path] = None, ready_timeout_s: float = 120.0,
                   exit_timeout_s: int = 30) -> Iterator[TritonProcess]:
    """A ready server on free ports of ``host`` (chosen now), always stopped on exit (tests)."""
    http, grpc, metrics = free_ports(host)
    server = start_server(repo, Ports(http, grpc, metrics), host=host, exit_timeout_s=exit_timeout_s,
                          python_path=python_path, log_path=log_path)
    try:
        server.wait_ready(ready_timeout_s)
        yield server
    finally:
        server.stop(timeout_s=exit_timeout_s + 15)


def serve_forever(repo: Path, *, http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                  host: str = DEFAULT_HOST, exit_timeout_s: int = 30, ready_timeout_s: float = 600.0,
                  python_path: Sequence[str | Path] = ()) -> int:
    """Run the server until SIGTERM/SIGINT, which are forwarded so in-flight requests drain.

    Returns the server's exit code (0 after a clean drain). A server that fails to become ready
    raises UserError with its error line. Call from the main thread (signal handlers).
    """
    server = start_server(repo, Ports(http_port, grpc_port, metrics_port), host=host,
                          exit_timeout_s=exit_timeout_s, python_path=python_path)
    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        if stopping.is_set():  # a second Ctrl-C: stop waiting for the drain
            log.warning("%s again: stopping the server now", signal.Signals(signum).name)
            server.process.kill()
            return
        log.info("%s: draining in-flight requests (up to %d s)", signal.Signals(signum).name, exit_timeout_s)
        stopping.set()
        server.terminate()

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        t0 = time.monotonic()
        try:
            server.wait_ready(ready_timeout_s)
        except UserError:
            if stopping.is_set():  # stopped while starting: not an error
                return server.stop(timeout_s=exit_timeout_s + 15)
            server.stop(timeout_s=15)
            raise
        log.info("stylegen ready in %.1f s: HTTP %s, gRPC %s, metrics %s", time.monotonic() - t0,
                 server.http_url, server.grpc_url, server.metrics_url)
        while server.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=0.5)
        code = server.process.returncode
        if not stopping.is_set():
            log.error("Triton server exited by itself (%s): %s", code, server.last_error())
        server.stop(timeout_s=5)  # already exited: joins the log pump, removes the work dir
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
