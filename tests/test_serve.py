"""`stylegen-trt serve` with the real model (the embedded demo bundle) on a real tritonserver, spoken to
only through tritonclient: served images equal `generate`'s, concurrent mixed requests batch and each
equals its solo rendering, bad requests fail alone with generate's one-line message, SIGTERM drains.
"""

from __future__ import annotations

import io
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
from PIL import Image

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("pytriton")

from stylegen_trt.runtime.bundle import open_bundle  # noqa: E402
from stylegen_trt.runtime.pipeline import StylePipeline  # noqa: E402
from stylegen_trt.runtime.requests import build_request, demo_bundle_path  # noqa: E402
from stylegen_trt.serve import server as triton_server  # noqa: E402
from stylegen_trt.serve.client import Options, StylegenClient, StylegenError  # noqa: E402
from stylegen_trt.serve.contract import ServeSettings  # noqa: E402
from stylegen_trt.serve.repo import write_model_repository  # noqa: E402

STYLES = sorted((Path(__file__).resolve().parent.parent / "examples" / "styles").glob("*.png"))
STEPS = 4  # a few DDPM steps keep each request ~0.1 s on the demo model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-real")
    repo = write_model_repository(tmp / "repo", ServeSettings(max_batch=8, max_queue_delay_ms=100, threads=2))
    with triton_server.running_server(repo, log_path=tmp / "server.log") as s:
        s.log = tmp / "server.log"
        yield s


@pytest.fixture(scope="module")
def solo():
    """Renders a request in this process, alone: the reference every served image must match."""
    with StylePipeline(open_bundle(demo_bundle_path()), style_cache_dir=None) as pipe:
        def render(prompt: str, styles=(), options: Options = Options()) -> np.ndarray:
            request = build_request(pipe.bundle.manifest, prompt, styles=tuple(styles),
                                    **{k: v for k, v in vars(options).items() if v is not None})
            return pipe.generate(request).images[0]
        yield render


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_served_image_equals_generate(server, solo):
    style = STYLES[0].read_bytes()
    options = Options(seed=3, steps=STEPS)
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        with StylegenClient(url, protocol) as client:
            png = client.generate("a large circle on the left", [style], options)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert max_diff(decode(png), solo("a large circle on the left", [style], options)) == 0


def test_concurrent_mixed_requests_batch_and_each_equals_its_solo_rendering(server, solo):
    """16 clients at once: 4 styles, some without style, own prompt, seed and guidance each, half over gRPC."""
    prompts = ["a large circle on the left", "a small square on the right", "a large triangle in the center",
               "a small cross on the left"]
    jobs = []
    for i in range(16):
        styles = [] if i % 5 == 0 else [STYLES[i % 4].read_bytes()]
        jobs.append((prompts[i % 4], styles, Options(seed=100 + i, steps=STEPS, guidance=3.0 + i % 3),
                     "grpc" if i % 2 else "http"))
    log_start = server.log.stat().st_size
    gate = threading.Barrier(len(jobs))

    def send(job):
        prompt, styles, options, protocol = job
        with StylegenClient(server.grpc_url if protocol == "grpc" else server.http_url, protocol) as client:
            gate.wait(timeout=30)
            return client.generate(prompt, styles, options)

    with ThreadPoolExecutor(len(jobs)) as pool:
        pngs = list(pool.map(send, jobs, timeout=300))
    for (prompt, styles, options, _), png in zip(jobs, pngs):
        assert max_diff(decode(png), solo(prompt, styles, options)) <= 1, (prompt, options)
    log = server.log.read_bytes()[log_start:].decode()
    sizes = [int(n) for n in re.findall(r"(\d+) requests \(", log)]
    assert sum(sizes) == len(jobs) and max(sizes) > 1, sizes  # the dynamic batcher did hand over batches


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, format="PNG")  # 81 MP, a few KB compressed
    return buffer.getvalue()


BAD = [
    ("undecodable", dict(styles=[b"definitely not an image"]), "style image 1 is not an image this tool can read"),
    ("bomb", dict(styles=[bomb_png()]), "as a possible decompression bomb"),
    ("steps 0", dict(options=Options(steps=0)), "--steps must be between 1 and 1000, got 0"),
    ("size", dict(options=Options(height=1024, steps=STEPS)), "--height 1024 is outside this bundle's range"),
    ("scheduler", dict(options=Options(scheduler="euler", steps=STEPS)), "unknown scheduler 'euler'"),
    ("missing prompt", dict(prompt=None), "missing input 'prompt': send the prompt as BYTES [1]"),
]


def test_bad_requests_fail_alone_and_the_server_stays_ready(server, solo):
    good = ("a large circle on the left", [STYLES[1].read_bytes()], Options(seed=7, steps=STEPS))
    log_start = server.log.stat().st_size
    gate = threading.Barrier(len(BAD) + 2)

    def send(case):
        with StylegenClient(server.http_url) as client:
            gate.wait(timeout=30)
            if case is None:
                return client.generate(*good)
            _, kw, _ = case
            if "prompt" in kw:  # no prompt input at all: a raw tritonclient request
                import tritonclient.http as http
                from tritonclient.utils import InferenceServerException

                seed = http.InferInput("seed", [1, 1], "INT64")
                seed.set_data_from_numpy(np.array([[1]], np.int64))
                try:
                    client._client.infer("stylegen", [seed])
                except InferenceServerException as exc:
                    return StylegenError(exc.message())
                return b"unexpected image"
            try:
                return client.generate("a large circle on the left", kw.get("styles", ()), kw.get("options", Options()))
            except StylegenError as exc:
                return exc

    with ThreadPoolExecutor(len(BAD) + 2) as pool:
        answers = list(pool.map(send, [None, *BAD, None], timeout=300))
    expected = solo(*good)
    for png in (answers[0], answers[-1]):
        assert isinstance(png, bytes) and max_diff(decode(png), expected) <= 1
    for (name, _, message), answer in zip(BAD, answers[1:-1]):
        assert isinstance(answer, StylegenError), name
        text = str(answer)
        assert message in text and "\n" not in text and "Traceback" not in text, (name, text)
    with StylegenClient(server.http_url) as client:
        assert client.is_ready()
    assert "Traceback" not in server.log.read_bytes()[log_start:].decode()


def test_serve_command_starts_in_seconds_and_sigterm_drains(tmp_path):
    """The CLI as a user runs it (embedded demo model, no other argument but ports): ready within
    seconds; a request in flight when SIGTERM arrives still gets its image; exit code 0."""
    http, grpc, metrics = triton_server.free_ports()
    env = {**os.environ, "STYLEGEN_TRT_CACHE": str(tmp_path / "cache")}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "stylegen_trt", "serve", "--http-port", str(http),
                             "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"127.0.0.1:{http}"
        with StylegenClient(url) as client:
            while not client.is_ready():
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                assert time.monotonic() - start < 60, "not ready within 60 s"
                time.sleep(0.2)
        ready_s = time.monotonic() - start
        result: dict = {}

        def long_request():
            with StylegenClient(url) as c:
                result["png"] = c.generate("a large circle on the left", [STYLES[0].read_bytes()], Options(seed=1))

        worker = threading.Thread(target=long_request)
        worker.start()
        time.sleep(0.3)  # the 50-step request is now in flight (~1 s on the demo model)
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert result.get("png", b"")[:8] == b"\x89PNG\r\n\x1a\n"
    assert ready_s < 30, ready_s


def test_bench_serve_reports_levels_goals_and_no_mixups(tmp_path):
    import json

    from conftest import cli

    out = cli("bench-serve", "--steps", "2", "--clients", "1,3", "--requests", "9", "--json", str(tmp_path / "s.json"),
              "--markdown", str(tmp_path / "s.md"), timeout=300)
    results = json.loads((tmp_path / "s.json").read_text())
    levels = results["levels"]
    assert [lv["clients"] for lv in levels] == [1, 3] and [lv["requests"] for lv in levels] == [16, 9]
    assert all(not lv["errors"] and lv["mismatched"] == 0 and lv["images_per_s"] > 0 for lv in levels)
    assert levels[0]["p50_s"] <= levels[0]["p95_s"] <= levels[0]["p99_s"]
    goals = {g["name"]: g for g in results["goals"]}
    assert goals["every request answered"]["met"] and "throughput at 3 clients / at 1" in goals
    assert (tmp_path / "s-load.png").is_file() and "| 3 | 9 |" in (tmp_path / "s.md").read_text()
    assert "3 clients:" in out.stdout


def test_bench_serve_bad_levels_are_one_line_errors():
    from conftest import cli

    out = cli("bench-serve", "--clients", "4,16", check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "the first level must be 1" in out.stderr
