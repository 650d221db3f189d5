"""`stylegen-trt bench`: the harness on the tiny model (1 repetition, 2 steps), the FLOP counter, the arithmetic.

Speed is never asserted: only that every figure is there, computed consistently, and that the
two sides' images agree.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from stylegen_trt.bench import configs, summary
from stylegen_trt.bench.flops import count_model_flops
from stylegen_trt.bench.workload import STAGES
from stylegen_trt.cli import app


def hand_made_graph() -> onnx.ModelProto:
    """x (N, 3, 9, 9) -> Conv 3x3 stride 2 pad 1 -> (N, 4, 5, 5); a (N, 5, 6) @ w (6, 7) -> (N, 5, 7)."""
    rng = np.random.default_rng(0)
    w_conv = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w_conv")
    w_mm = numpy_helper.from_array(rng.standard_normal((6, 7)).astype(np.float32), "w_mm")
    nodes = [helper.make_node("Conv", ["x", "w_conv"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("MatMul", ["a", "w_mm"], ["z"])]
    graph = helper.make_graph(
        nodes, "hand_made",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 9, 9]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w_conv, w_mm])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flop_counter_exact_on_hand_made_graph():
    count = count_model_flops(hand_made_graph(), {"x": (2, 3, 9, 9), "a": (2, 5, 6)})
    conv = 2 * 2 * 4 * 5 * 5 * 3 * 3 * 3  # 2 x N x C_out x H_out x W_out x C_in x k x k
    matmul = 2 * 2 * 5 * 7 * 6  # 2 x batch x M x N x K
    assert count.by_op == {"Conv": conv, "Gemm": 0, "MatMul": matmul}
    assert count.total == conv + matmul == 10800 + 840
    assert count.complete and count.nodes == 2


def test_ratios_agreement_and_targets():
    assert summary.speedup(runtime_s=2.0, torch_s=5.0) == 2.5
    assert summary.ratio(300.0, 1200.0) == 0.25
    assert summary.ratio(1.0, 0.0) is None and summary.speedup(None, 3.0) is None
    assert summary.median([3.0, 1.0, 2.0]) == 2.0

    a = np.zeros((1, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0, 0] = 2
    assert summary.compare_images(a, b).agree and summary.compare_images(a, b).max_abs_diff == 2
    b[0, 0, 0, 1] = 3
    assert not summary.compare_images(a, b).agree
    assert not summary.compare_images(a, a[:, :2]).agree

    results = {"targets_profile": "small",
               "end_to_end": {"speedup": 2.5, "agreement": {"agree": True}},
               "cold_start": {"speedup": 3.0, "agreement": {"agree": True},
                              "runtime": [{"ready_s": 0.5}, {"ready_s": 0.7}], "torch": [{"ready_s": 4.0}]},
               "peak_rss": {"ratio": 0.4}, "style_overhead": {"ratio": None},
               "optimum": {"styled_ratio": 1.2, "plain_ratio": 0.9, "agreement": {"agree": True}}}
    targets = summary.targets(results)
    met = {t.name: t.met for t in targets}
    assert met == {"end-to-end speedup (demo/small)": True, "cold-start speedup": False,
                   "time to ready runtime / torch (fresh process)": True,
                   "peak RSS runtime / torch": True, "style-guided / plain (CFG batch 2)": None,
                   "styled runtime / optimum-intel plain, per image": False,
                   "plain runtime / optimum-intel plain, per image": True}
    assert next(t for t in targets if t.name.startswith("time to ready")).value == pytest.approx(0.6 / 4.0)
    results["optimum"]["agreement"]["agree"] = False  # not the same images: its ratios do not count
    assert [t.met for t in summary.targets(results) if "optimum" in t.name] == [False, False]
    results["end_to_end"]["agreement"]["agree"] = False  # a faster wrong answer does not count
    assert summary.targets(results)[0].met is False
    sd15 = {**results, "targets_profile": "sd15", "unet": {"gemm_share": 0.9}}
    names = [t.name for t in summary.targets(sd15)]
    assert names[:2] == ["end-to-end speedup (SD-1.5-size)", "UNet step / measured GEMM rate"]
    assert summary.profile_of("custom", 512) == "sd15" and summary.profile_of("small", 256) == "small"


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the bench sets it for both sides; later tests keep theirs


def test_bench_on_tiny_model(tiny, styled_bundle, tmp_path, torch_threads):
    out, md = tmp_path / "bench.json", tmp_path / "RESULTS.md"
    args = ["bench", "--bundle", str(styled_bundle), "--base", str(tiny.sd_dir), "--vgg", str(tiny.vgg_path),
            "--branch", str(tiny.branch_path), "--steps", "2", "--repeats", "1", "--warmup", "1", "--threads", "1",
            "--overhead-steps", "2", "--quality", "ddpm:2,dpmpp:2", "--gemm-size", "256",
            "--json", str(out), "--markdown", str(md)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())

    e2e, cold, rss = r["end_to_end"], r["cold_start"], r["peak_rss"]
    for section, keys in (("end_to_end", ("runtime_s", "torch_s", "speedup")),
                          ("cold_start", ("runtime_s", "torch_s", "speedup")),
                          ("peak_rss", ("runtime_mb", "torch_mb", "ratio")), ("style_overhead", ("ratio",))):
        for key in keys:
            assert isinstance(r[section][key], float) and r[section][key] > 0, (section, key)
    assert e2e["speedup"] == pytest.approx(e2e["torch_s"] / e2e["runtime_s"])
    assert cold["speedup"] == pytest.approx(cold["torch_s"] / cold["runtime_s"])
    assert rss["ratio"] == pytest.approx(rss["runtime_mb"] / rss["torch_mb"])
    n1 = r["style_overhead"]["batches"]["1"]
    assert n1["ratio"] == pytest.approx(n1["styled_s"] / n1["plain_s"]) and n1["unet_batch"] == 2
    assert r["style_overhead"]["batches"]["4"]["unet_batch"] == 8
    # a reduced run's ratio is also judged at DDPM-50, where the fixed VAE cost no longer dilutes it
    assert r["style_overhead"]["scaled_to_steps"] == 50
    assert r["style_overhead"]["ratio"] == max(n1["ratio"], n1["ratio_scaled"])

    # Outputs agree (uint8, max diff <= 2), in process and across the fresh cold-start processes.
    assert e2e["agreement"]["agree"] and e2e["agreement"]["max_abs_diff"] <= 2
    assert cold["agreement"]["agree"]
    assert cold["runtime"][0]["same_as_in_process"] and cold["torch"][0]["same_as_in_process"]
    assert not rss["runtime_imported_torch"] and cold["torch"][0]["torch_imported"]

    for side in ("runtime", "torch"):
        stages = r["stages"][side]
        assert list(stages) == list(STAGES)
        assert stages["unet"]["calls"] == 2
        assert stages["style_branch"]["calls"] == (1 if side == "runtime" else 2)  # the runtime batches timesteps
        assert stages["text_encoder"]["calls"] == 2 and stages["style_encoder"]["calls"] == 1  # cold caches
        assert stages["vae_decoder"]["calls"] == 1
        assert sum(s["seconds"] for s in stages.values()) == pytest.approx(e2e[f"{side}_s"], rel=1e-6)
    unet = r["unet"]
    assert unet["unresolved_nodes"] == 0 and unet["batch"] == 2 and unet["flops_per_call"] > 0
    assert unet["gemm_share"] == pytest.approx(unet["runtime_gflops"] / unet["gemm_gflops"])
    rows = r["steps_for_quality"]["rows"]
    assert [(q["scheduler"], q["steps"]) for q in rows] == [("ddpm", 2), ("dpmpp", 2)]
    assert all(q["stysim"] > 0 and q["content_accuracy"] is None for q in rows)  # no content judge for tiny
    assert {t["name"] for t in r["targets"]} >= {"cold-start speedup", "peak RSS runtime / torch"}
    from stylegen_trt.bench.optimum_side import find_python

    if find_python(None)[0] is None:  # the third side is named as not run, and why; its targets not measured
        assert r["optimum"]["skipped"] and "optimum-intel is not installed" in r["optimum"]["reason"]
        assert [t["met"] for t in r["targets"] if "optimum-intel" in t["name"]] == [None, None]
        assert "optimum-intel is not installed" in md.read_text()
    assert r["machine"]["gemm"]["gflops"] > 0 and r["machine"]["threads"] == 1
    assert 0 <= r["machine"]["other_processes_cpu_share"] <= 1

    text = md.read_text()
    assert "stylegen-trt bench --bundle" in text and "--steps 2" in text and "## Targets" in text
    assert (tmp_path / "RESULTS-stages.png").is_file() and "RESULTS-stages.png" in text


def test_bench_runtime_modules_import_no_torch():
    code = ("import sys; import stylegen_trt.bench.harness, stylegen_trt.bench.runtime_side, "
            "stylegen_trt.bench.coldstart, stylegen_trt.bench.report; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_cache_is_reused_and_built_atomically(tmp_path, monkeypatch):
    calls = []

    def fake_build(config, out_dir):
        calls.append(out_dir)
        (out_dir / "bundle").mkdir()

    monkeypatch.setattr(configs, "build", fake_build)
    first = configs.prepare("tiny", tmp_path)
    again = configs.prepare("tiny", tmp_path)
    assert first.built and not again.built and len(calls) == 1
    assert first.bundle == again.bundle and first.bundle.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == [first.bundle.parent.name]  # no staging left behind


def test_sd15_config_is_sd15_size():
    """Built on the meta device (no memory, no time): SD 1.5's exact parameter counts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    class Tokenizer:  # what text_encoder_config reads
        bos_token_id, eos_token_id, pad_token_id = 49406, 49407, 49407

    config = configs.CONFIGS["sd15"]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**configs.unet_kwargs(config))
        vae = AutoencoderKL(**configs.vae_kwargs(config))
        text = CLIPTextModel(configs.text_encoder_config(config, Tokenizer()))
    count = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text)]
    assert count == [859_520_964, 83_653_863, 123_060_480]
    assert config.native_size == 512 and config.style_image_size == 512


FAKE_CHILD = '''#!{python}
import json, sys
import numpy as np
job = json.loads(sys.argv[2])
mode = {mode!r}
if mode == "error":
    print(json.dumps({{"error": "RuntimeError: compile_model failed"}}), flush=True)
    sys.exit(1)
if mode == "exit":
    sys.stderr.write("Fatal Python error: Segmentation fault\\n")
    sys.exit(139)
print(json.dumps({{"ready": True, "export_s": None, "load_s": 0.5, "precision": "f32", "versions": {{}}}}), flush=True)
for count, line in enumerate(sys.stdin, 1):
    request = json.loads(line)
    if request.get("quit"):
        break
    if mode == f"crash-at-{{count}}":  # dies mid-run, as OpenVINO has on some AMD CPUs
        sys.stderr.write("Floating point exception\\n")
        sys.exit(136)
    x_t = np.load(request["latents"])
    np.save(request["out"], np.full((1, job["size"], job["size"], 3), int(x_t.shape[-1]), np.uint8))
    print(json.dumps({{"seconds": 0.25, "step_s": [0.1] * (request["steps"] - 1), "steps_seen": request["steps"]}}),
          flush=True)
'''


def fake_optimum_python(tmp_path, mode):
    path = tmp_path / f"python-{mode}"
    path.write_text(FAKE_CHILD.format(python=sys.executable, mode=mode))
    path.chmod(0o755)
    return path


def test_optimum_side_protocol_with_a_stand_in_child(tmp_path):
    """The parent's side of the optimum-intel protocol: ready, one request per image, the images read back,
    the child's temporary files removed, a clean quit; its failures are one UserError line."""
    from stylegen_trt.bench.optimum_side import OptimumSide, find_python
    from stylegen_trt.bench.workload import Workload
    from stylegen_trt.errors import UserError

    python, _ = find_python(fake_optimum_python(tmp_path, "ok"))
    side = OptimumSide(python, tmp_path, tmp_path / "ir", 1, "auto", 64, tmp_path / "child.log")
    assert side.ready["ready"] and side.ready["parent_ready_s"] > 0
    work = Workload("a cat", "", None, "ddpm", 5, 7.5, 0, 64)
    run = side.run(work)
    assert run.images.shape == (1, 64, 64, 3) and int(run.images[0, 0, 0, 0]) == 8  # x_T was 8x8 latents
    assert run.step_s == [0.1] * 4
    assert run.loop_and_fixed(5) == pytest.approx((0.25, 0.0))  # 5 x 0.1 s > the call's 0.25 s: capped
    assert not list(tmp_path.glob("optimum-*.npy"))
    side.close()
    assert side._proc.returncode == 0
    with pytest.raises(ValueError):
        side.run(work.but(style=tmp_path / "s.png"))

    with pytest.raises(UserError, match="compile_model failed"):
        OptimumSide(str(fake_optimum_python(tmp_path, "error")), tmp_path, tmp_path / "ir", 1, "auto", 64,
                    tmp_path / "child2.log")
    with pytest.raises(UserError, match="exited .*Segmentation fault"):
        OptimumSide(str(fake_optimum_python(tmp_path, "exit")), tmp_path, tmp_path / "ir", 1, "auto", 64,
                    tmp_path / "child3.log")
    with pytest.raises(UserError, match="--optimum-python .* is not an executable"):
        find_python(tmp_path / "no-such-python")


def test_a_failing_optimum_side_is_reported_not_fatal(tmp_path, monkeypatch):
    from stylegen_trt.bench.harness import BenchSettings, optimum_comparison
    from stylegen_trt.bench.workload import Workload

    monkeypatch.setenv("STYLEGEN_TRT_CACHE", str(tmp_path / "cache"))
    model = configs.BenchModel("tiny", tmp_path / "bundle", tmp_path / "sd", None, None)
    work = Workload("a cat", "", tmp_path / "style.png", "ddpm", 2, 7.5, 0, 64)
    settings = BenchSettings(optimum_python=fake_optimum_python(tmp_path, "error"))
    section = optimum_comparison(model, None, work, settings, 1)  # fails before the runtime is used
    assert section["skipped"] and "compile_model failed" in section["reason"] and section["styled_ratio"] is None
    assert summary.targets({"optimum": section})[-1].met is None


class _StandInRuntime:
    """The runtime side's ``run``: images matching the stand-in child's, fixed stage times."""

    def run(self, work):
        from stylegen_trt.bench.workload import Run

        images = np.full((1, work.size, work.size, 3), int(work.latents().shape[-1]), np.uint8)
        stages = {"unet": {"seconds": 0.1, "calls": work.steps}, "style_branch": {"seconds": 0.0, "calls": 0},
                  "scheduler": {"seconds": 0.0, "calls": work.steps}}
        return Run(images, 0.2, stages)


@pytest.mark.parametrize("crash_at, finished", [(1, 0), (2, 1)])
def test_an_optimum_side_dying_mid_run_keeps_the_finished_rounds(tmp_path, monkeypatch, crash_at, finished):
    """A child that dies on its Nth image: the bench goes on; the rounds it finished are reported, with why it
    stopped, or the section is skipped with the reason when it finished none."""
    from stylegen_trt.bench.harness import BenchSettings, optimum_comparison
    from stylegen_trt.bench.report import optimum_lines, optimum_summary
    from stylegen_trt.bench.workload import Workload

    monkeypatch.setenv("STYLEGEN_TRT_CACHE", str(tmp_path / "cache"))
    model = configs.BenchModel("tiny", tmp_path / "bundle", tmp_path / "sd", None, None)
    work = Workload("a cat", "", tmp_path / "style.png", "ddpm", 2, 7.5, 0, 64)
    settings = BenchSettings(optimum_python=fake_optimum_python(tmp_path, f"crash-at-{crash_at}"), warmup=0,
                             repeats=3)
    section = optimum_comparison(model, _StandInRuntime(), work, settings, 1)
    if not finished:
        assert section["skipped"] and section["plain_ratio"] is None
        assert "failed in round 1" in section["reason"] and "Floating point exception" in section["reason"]
        return
    assert not section.get("skipped") and len(section["runs_s"]["optimum"]) == finished
    assert "failed in round 2" in section["failure"] and section["agreement"]["agree"]
    assert section["plain_ratio"] == pytest.approx(0.2 / 0.25)
    assert "stopped early" in "\n".join(optimum_lines({"optimum": section} | {"settings": {"backend": "ort"}}))
    assert "failed in round 2" in optimum_summary({"optimum": section})[0]


def test_bench_cli_rejects_a_bad_optimum_python_before_building(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--config", "tiny", "--cache-dir", str(tmp_path / "cache"),
                                      "--optimum-python", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "is not an executable file" in result.output
    assert not (tmp_path / "cache").exists()


OPTIMUM_PYTHON = os.environ.get("STYLEGEN_TRT_OPTIMUM_PYTHON")


@pytest.mark.skipif(not OPTIMUM_PYTHON, reason="set STYLEGEN_TRT_OPTIMUM_PYTHON to a python with optimum-intel")
def test_optimum_intel_child_gives_the_runtimes_plain_image(tiny, styled_bundle, tmp_path):
    """The real optimum-intel pipeline on the tiny model's directory: same x_T, sampler and DDPM noise as the
    runtime, so the images agree to a pixel unit or two."""
    from stylegen_trt.bench.optimum_side import OptimumSide
    from stylegen_trt.bench.runtime_side import RuntimeSide
    from stylegen_trt.bench.workload import Workload

    work = Workload("a red cat", "", None, "ddpm", 4, 7.5, 0, 64)
    side = OptimumSide(OPTIMUM_PYTHON, tiny.sd_dir, tmp_path / "ir", 1, "fp32", 64, tmp_path / "child.log")
    try:
        theirs = side.run(work)
    finally:
        side.close()
    runtime = RuntimeSide(styled_bundle, 1)
    try:
        ours = runtime.run(work)
    finally:
        runtime.close()
    assert side.ready["precision"] == "f32" and side.ready["export_s"] > 0
    assert len(theirs.step_s) == 3
    diff = np.abs(theirs.images.astype(int) - ours.images.astype(int))
    assert diff.max() <= 2, diff.max()
