"""Triton infrastructure of `stylegen-trt serve` / `triton-repo`, with a toy handler (tests/serve_toy.py).

Real tritonserver processes on free loopback ports, spoken to only through tritonclient. One server
per module (startup is the cost); the SIGTERM test runs its own through serve_forever.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("pytriton")

from stylegen_trt.errors import UserError  # noqa: E402
from stylegen_trt.serve import server as triton_server  # noqa: E402
from stylegen_trt.serve.contract import INPUTS, ServeSettings  # noqa: E402
from stylegen_trt.serve.repo import MARKER, write_model_repository  # noqa: E402
from stylegen_trt.serve.triton_model import settings_from_args  # noqa: E402

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from serve_toy import decode_toy_png  # noqa: E402

MAX_BATCH = 8
CLIENT_TIMEOUT_S = 60


def toy_settings(tmp: Path, **kw) -> ServeSettings:
    return ServeSettings(handler="serve_toy:ToyHandler", max_batch=MAX_BATCH,
                         handler_options=(("batch_log", str(tmp / "batches.jsonl")),), **kw)


def fake_bundle(tmp: Path) -> Path:
    (tmp / "bundle").mkdir(exist_ok=True)
    (tmp / "bundle" / "manifest.json").write_text("{}")
    return tmp / "bundle"


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (stray servers or stubs)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def wait_gone(text: str, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    # copy_bundle: the model must find the copy by its path relative to the model directory
    settings = toy_settings(tmp, bundle=fake_bundle(tmp), max_queue_delay_ms=400)
    repo = write_model_repository(tmp / "repo", settings, copy_bundle=True)
    t0 = time.monotonic()
    with triton_server.running_server(repo, python_path=[TESTS], log_path=tmp / "server.log") as server:
        server.startup_s = time.monotonic() - t0
        server.batch_log = tmp / "batches.jsonl"
        yield server
    assert server.process.returncode == 0
    assert wait_gone(str(repo)) == [], "a tritonserver or stub of this module outlived its test"


def make_inputs(module, prompt: str, n_styles: int = 0, **options) -> list:
    inputs = []

    def add(name: str, array: np.ndarray, dtype: str) -> None:
        t = module.InferInput(name, list(array.shape), dtype)
        t.set_data_from_numpy(array)
        inputs.append(t)

    add("prompt", np.array([[prompt.encode()]], dtype=np.object_), "BYTES")
    if n_styles:
        add("style_image", np.array([[b"img%d" % i for i in range(n_styles)]], dtype=np.object_), "BYTES")
    types = {s.name: s for s in INPUTS}
    for name, value in options.items():
        spec = types[name]
        array = np.array([[value.encode() if isinstance(value, str) else value]], dtype=spec.numpy_dtype)
        add(name, array, spec.dtype)
    return inputs


def infer(server, prompt: str, n_styles: int = 0, protocol: str = "http", **options):
    """(prompt, n_styles) decoded from the PNG, or the error's message."""
    module = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url
    client = module.InferenceServerClient(url, network_timeout=CLIENT_TIMEOUT_S) if protocol == "http" \
        else module.InferenceServerClient(url)
    try:
        kw = {"timeout": CLIENT_TIMEOUT_S} if protocol == "http" else {"client_timeout": CLIENT_TIMEOUT_S}
        result = client.infer("stylegen", make_inputs(module, prompt, n_styles, **options), **kw)
    except Exception as e:  # tritonclient's InferenceServerException
        return f"ERROR {e.status()} {e.message()}" if hasattr(e, "status") else f"ERROR {e}"
    finally:
        client.close()
    png = result.as_numpy("image")
    assert png.shape == (1, 1) and png[0, 0][:8] == b"\x89PNG\r\n\x1a\n"
    return decode_toy_png(png[0, 0])


def burst(server, requests: list[dict]) -> list:
    """Send all requests at once (a barrier lines the client threads up)."""
    gate = threading.Barrier(len(requests))

    def one(kw):
        gate.wait(timeout=30)
        return infer(server, **kw)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests, timeout=CLIENT_TIMEOUT_S * 2))


def batches_since(server, offset: int) -> list[dict]:
    text = server.batch_log.read_text() if server.batch_log.exists() else ""
    return [json.loads(line) for line in text[offset:].splitlines() if line]


def log_size(server) -> int:
    return len(server.batch_log.read_text()) if server.batch_log.exists() else 0


# --- server ---------------------------------------------------------------------------------------

def test_ready_and_png_over_http_and_grpc(toy_server):
    assert toy_server.startup_s < 60
    http = httpclient.InferenceServerClient(toy_server.http_url)
    grpc = grpcclient.InferenceServerClient(toy_server.grpc_url)
    try:
        assert http.is_server_ready() and grpc.is_server_ready()
        assert http.is_model_ready("stylegen") and grpc.is_model_ready("stylegen")
        meta = http.get_model_metadata("stylegen")
        assert [i["name"] for i in meta["inputs"]] == [s.name for s in INPUTS]
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("image", "BYTES")]
    finally:
        http.close()
        grpc.close()
    assert infer(toy_server, "a red fox", 2) == ("a red fox", 2)
    assert infer(toy_server, "a blue owl", protocol="grpc", seed=7, steps=1) == ("a blue owl", 0)


def test_bad_request_fails_alone(toy_server):
    offset = log_size(toy_server)
    requests = [{"prompt": f"ok{i}", "n_styles": i % 3} for i in range(5)]
    requests[2] = {"prompt": "bad"}
    requests[4] = {"prompt": "crash", "protocol": "grpc"}
    results = burst(toy_server, requests)
    assert results[0] == ("ok0", 0) and results[1] == ("ok1", 1) and results[3] == ("ok3", 0)
    bad, crash = results[2], results[4]
    assert isinstance(bad, str) and bad.startswith("ERROR 400 ") and "\n" not in bad
    assert bad.endswith("bad prompt: say something else")  # Triton puts "in ensemble 'stylegen', " before it
    assert isinstance(crash, str) and crash.startswith("ERROR StatusCode.INTERNAL ") and "\n" not in crash
    assert crash.endswith("internal error (ValueError: toy crash)")
    batches = batches_since(toy_server, offset)
    assert any({"bad", "ok0"} <= set(b["prompts"]) for b in batches), batches  # failed beside batch-mates
    assert infer(toy_server, "still here") == ("still here", 0)
    assert httpclient.InferenceServerClient(toy_server.http_url).is_server_ready()
    log = Path(toy_server.log_path).read_text()
    assert "Traceback" not in log and "toy crash" in log


def test_mixed_inputs_and_style_counts_share_one_execute(toy_server):
    offset = log_size(toy_server)
    requests = [
        {"prompt": "p0"},
        {"prompt": "p1", "n_styles": 1},
        {"prompt": "p2", "n_styles": 3, "seed": 3},
        {"prompt": "p3", "guidance": 5.0, "scheduler": "ddim"},
        {"prompt": "p4", "n_styles": 2, "negative": "blurry", "style_scale": 0.5},
        {"prompt": "p5", "height": 64, "width": 64},
        {"prompt": "p6", "n_styles": 1, "steps": 1},
        {"prompt": "p7", "n_styles": 2},
    ]
    results = burst(toy_server, requests)
    assert results == [(r["prompt"], r.get("n_styles", 0)) for r in requests]
    batches = batches_since(toy_server, offset)
    assert [b["size"] for b in batches] == [MAX_BATCH], batches
    assert len({tuple(i) for i in batches[0]["inputs"]}) == 7 and set(batches[0]["styles"]) == {0, 1, 2, 3}


def test_batch_of_two_in_one_request_is_refused(toy_server):
    client = httpclient.InferenceServerClient(toy_server.http_url)
    t = httpclient.InferInput("prompt", [2, 1], "BYTES")
    t.set_data_from_numpy(np.array([[b"a"], [b"b"]], dtype=np.object_))
    with pytest.raises(Exception, match="batch 1"):
        client.infer("stylegen", [t], timeout=CLIENT_TIMEOUT_S)
    client.close()


# --- SIGTERM through serve_forever (the CLI's path) ------------------------------------------------

SERVE_SCRIPT = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO)
from stylegen_trt.serve.server import serve_forever
sys.exit(serve_forever(Path(sys.argv[1]), http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]),
                       metrics_port=int(sys.argv[4]), python_path=[sys.argv[5]], exit_timeout_s=20))
"""


def test_sigterm_drains_in_flight_request_and_exits_0(tmp_path):
    repo = write_model_repository(tmp_path / "repo", toy_settings(tmp_path, max_queue_delay_ms=0))
    ports = triton_server.free_ports()
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(repo), *map(str, ports), str(TESTS)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "wb"))
    try:
        server = triton_server.TritonProcess(process=proc, ports=triton_server.Ports(*ports), host="127.0.0.1",
                                             workdir=tmp_path)
        deadline = time.monotonic() + 60
        while not server.is_ready():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "serve_forever not ready within 60 s"
            time.sleep(0.1)
        log = tmp_path / "batches.jsonl"
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(infer, server, "slow", 1, steps=2000)  # the toy sleeps 2 s
            deadline = time.monotonic() + 30
            while not (log.exists() and "slow" in log.read_text()):  # in execute() now
                assert time.monotonic() < deadline and not pending.done(), pending.result()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert pending.result(timeout=CLIENT_TIMEOUT_S) == ("slow", 1)
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert wait_gone(str(repo)) == []
    assert not list(tmp_path.glob("stylegen-trt-triton-*"))


# --- repository writer and launcher pieces (no server) ---------------------------------------------

def test_repository_refuses_a_foreign_directory_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a stylegen-trt model repository"):
        write_model_repository(foreign, ServeSettings())
    assert (foreign / "notes.txt").read_text() == "mine"
    repo = write_model_repository(tmp_path / "repo", ServeSettings(max_batch=4))
    repo = write_model_repository(tmp_path / "repo", ServeSettings(max_batch=2, instances=3))
    assert (repo / MARKER).is_file()
    assert "max_batch_size: 2" in (repo / "stylegen" / "config.pbtxt").read_text()
    core = (repo / "stylegen_core" / "config.pbtxt").read_text()
    assert "count: 3 kind: KIND_CPU" in core and "max_batch_size: 2" in core
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "repo"]  # no temp dirs left
    with pytest.raises(UserError, match="--max-batch"):
        write_model_repository(tmp_path / "other", ServeSettings(max_batch=0))
    with pytest.raises(UserError, match="not a bundle"):
        write_model_repository(tmp_path / "other", ServeSettings(bundle=tmp_path / "nowhere"))


def test_repository_contract_and_settings(tmp_path):
    bundle = fake_bundle(tmp_path)
    settings = ServeSettings(bundle=bundle, backend="trt", threads=2, max_queue_delay_ms=2.5,
                             handler_options=(("k", "v"),))
    repo = write_model_repository(tmp_path / "repo", settings)
    ensemble = (repo / "stylegen" / "config.pbtxt").read_text()
    for spec in INPUTS:  # the prompt too, so that a request without it gets an answer (test_serve.py)
        line = next(line for line in ensemble.splitlines() if f'name: "{spec.name}"' in line)
        assert "optional: true" in line
    assert [s.name for s in INPUTS if not s.optional] == ["prompt"]
    core = (repo / "stylegen_core" / "config.pbtxt").read_text()
    assert "KIND_GPU" in core and "max_queue_delay_microseconds: 2500" in core
    assert f'string_value: "{bundle.resolve()}"' in core
    params = {k: {"string_value": v} for k, v in re.findall(r'key: "([^"]+)" value: \{ string_value: "([^"]*)" \}', core)}
    args = {"model_config": json.dumps({"parameters": params}), "model_repository": str(repo / "stylegen_core")}
    assert settings_from_args(args) == ServeSettings(**{**settings.__dict__, "bundle": bundle.resolve()})


def test_missing_pytriton_is_a_one_line_user_error(monkeypatch):
    monkeypatch.setattr(triton_server.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"install stylegen-trt\[serve\]"):
        triton_server.locate_triton()


def test_stub_gets_this_interpreters_libpython():
    dist = triton_server.locate_triton()
    env = triton_server.server_env(dist)
    own = triton_server.own_libpython()
    if own is not None:
        assert triton_server.stub_libpython(dist.stub, env).resolve() == own.resolve()
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_a_model_that_fails_to_load_is_a_one_line_user_error(tmp_path):
    bundle = fake_bundle(tmp_path)
    repo = write_model_repository(tmp_path / "repo", toy_settings(tmp_path, bundle=bundle))
    (bundle / "manifest.json").unlink()  # the toy refuses to load, as the real handler would
    with pytest.raises(UserError, match=r"model 'stylegen_core' failed to load: .*no bundle at") as e:
        with triton_server.running_server(repo, python_path=[TESTS], log_path=tmp_path / "server.log"):
            pass
    assert "\n" not in str(e.value)
    assert wait_gone(str(repo)) == []
