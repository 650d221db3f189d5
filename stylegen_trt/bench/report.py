"""Rendering bench results: a terminal summary, RESULTS.md-style Markdown, and a stage-breakdown PNG (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

from stylegen_trt.bench.summary import median, ready_ratio
from stylegen_trt.bench.workload import STAGES

SIDES = (("runtime", "runtime"), ("torch", "PyTorch eager"))
BACKEND_NAMES = {"ort": "ORT", "trt": "TensorRT", "openvino": "OpenVINO"}


def runtime_label(results: dict) -> str:
    """'runtime (ORT)', 'runtime (OpenVINO bf16)', ...: which backend the runtime side ran on."""
    settings = results.get("settings", {})
    backend = settings.get("backend", "ort")
    precision = settings.get("precision", "auto")
    name = BACKEND_NAMES.get(backend, backend)
    return f"runtime ({name}{'' if precision in ('auto', None) else ' ' + precision})"
COLOURS = {"runtime": (38, 110, 190), "torch": (230, 126, 34)}


def _f(value, digits: int = 3, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _g(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _met(met) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def target_lines(results: dict) -> list[str]:
    lines = []
    for t in results.get("targets", []):
        value = _f(t["value"], 3)
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"{t['name']}: {value} (target {t['op']} {t['threshold']}): {_met(t['met'])}{note}")
    return lines


def text_summary(results: dict) -> str:
    """A few lines for the terminal."""
    e2e, cold, rss = results["end_to_end"], results["cold_start"], results["peak_rss"]
    agree = e2e["agreement"]
    lines = [
        f"model {results['model']['name']} ({results['model'].get('note', '')}), "
        f"{results['settings']['scheduler']}-{results['settings']['steps']} at {results['settings']['size']} px, "
        f"{results['settings']['threads']} threads, {results['machine']['cpu']}",
        f"end to end: runtime {_f(e2e['runtime_s'])} s, torch {_f(e2e['torch_s'])} s per image: "
        f"speedup {_x(e2e['speedup'])}; outputs {'agree' if agree['agree'] else 'DISAGREE'} "
        f"(max pixel diff {agree['max_abs_diff']}, tolerance {agree['tolerance']})",
        f"cold start: runtime {_f(cold.get('runtime_s'))} s, torch {_f(cold.get('torch_s'))} s: "
        f"speedup {_x(cold.get('speedup'))}",
        f"peak RSS: runtime {_f(rss.get('runtime_mb'), 0)} MiB, torch {_f(rss.get('torch_mb'), 0)} MiB: "
        f"ratio {_f(rss.get('ratio'), 2)}",
        f"style overhead (CFG batch 2): {_f(results['style_overhead'].get('ratio'), 3)}",
        *optimum_summary(results),
        f"UNet: {_f(results['unet'].get('runtime_gflops'), 1)} GFLOP/s runtime, "
        f"{_f(results['unet'].get('torch_gflops'), 1)} torch; GEMM {_f(results['unet'].get('gemm_gflops'), 1)} GFLOP/s "
        f"(share {_f(results['unet'].get('gemm_share'), 2)})",
        *("target " + line for line in target_lines(results)),
        *("FLAG: " + flag for flag in results.get("flags", [])),
    ]
    return "\n".join(lines)


def optimum_summary(results: dict) -> list[str]:
    o = results.get("optimum")
    if not o:
        return []
    if o.get("skipped"):
        return [f"optimum-intel: not run ({o.get('reason', 'skipped')})"]
    return [f"optimum-intel (plain): {_f(o['optimum_s'])} s per image; runtime plain {_f(o['runtime_plain_s'])} s, "
            f"styled {_f(o['runtime_styled_s'])} s; images {'agree' if o['agreement']['agree'] else 'DISAGREE'} "
            f"(max pixel diff {o['agreement']['max_abs_diff']})"
            + (f"; then {o['failure']}" if o.get("failure") else "")]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(results: dict, plot_name: str | None = None) -> str:
    m, s, e2e = results["machine"], results["settings"], results["end_to_end"]
    model = results["model"]
    out = [f"# stylegen-trt benchmark: `{model['name']}` model", ""]
    out += [f"Produced by: `{results['command']}`" if results.get("command") else "Produced by: (command not recorded)",
            "", f"Started {results['started']}, took {results['duration_s']:.0f} s.", ""]
    for flag in results.get("flags", []):
        out.append(f"> **{flag}**")
    if results.get("flags"):
        out.append("")
    out += ["## Targets (CPU, ratios from this one run)", ""]
    out += _table(["target", "measured", "target", "status"],
                  [[t["name"], _f(t["value"], 3), f"{t['op']} {t['threshold']}", _met(t["met"]) +
                    (f" ({t['note']})" if t.get("note") else "")] for t in results["targets"]])
    agree = e2e["agreement"]
    out += ["", "## End to end (seconds per image)", ""]
    out += _table(["", runtime_label(results), "PyTorch eager", "speedup"],
                  [["median", _f(e2e["runtime_s"]), _f(e2e["torch_s"]), _x(e2e["speedup"])],
                   ["runs", ", ".join(_f(x) for x in e2e["runtime_runs_s"]),
                    ", ".join(_f(x) for x in e2e["torch_runs_s"]), ""]])
    out += ["", f"{s['scheduler']}-{s['steps']}, guidance {s['guidance']} (CFG batch 2), {s['size']}x{s['size']} px, "
            f"seed {s['seed']}, {s['threads']} threads on both sides; {e2e['warmup']} warm-up + {e2e['repeats']} "
            f"timed rounds, sides alternating. Caches: {e2e['caches']}.", "",
            f"Outputs: **{'agree' if agree['agree'] else 'DISAGREE'}** - uint8 images, max |runtime - torch| = "
            f"{agree['max_abs_diff']} (tolerance {agree['tolerance']}), mean {agree['mean_abs_diff']:.4f}, over "
            f"{agree.get('rounds_compared', 1)} rounds."]
    st = results["stages"]
    steps = st["steps"]
    out += ["", f"## Stage breakdown (seconds per image, {steps} steps)", ""]
    rows = []
    for name in STAGES:
        r, t = st["runtime"][name], st["torch"][name]
        rows.append([name, _f(r["seconds"], 4), _f(r["calls"], 0), _f(t["seconds"], 4), _f(t["calls"], 0),
                     _x(t["seconds"] / r["seconds"]) if r["seconds"] > 0 and t["seconds"] > 0 else "n/a"])
    out += _table(["stage", "runtime s", "calls", "torch s", "calls", "torch / runtime"], rows)
    per_step = [[name] + [_f(st[side][name]["seconds"] / steps * 1000, 2) for side, _ in SIDES]
                for name in ("unet", "style_branch", "scheduler")]
    out += ["", "Per step (ms):", ""] + _table(["stage", "runtime", "torch"], per_step)
    out += [""] + [f"- {k}: {v}" for k, v in st["notes"].items()]
    if plot_name:
        out += ["", f"![stage breakdown]({plot_name})"]
    u = results["unet"]
    out += ["", "## UNet arithmetic", ""]
    out += _table(["", "value"], [
        ["FLOPs per call", f"{u['flops_per_call'] / 1e9:.3f} GFLOP (batch {u['batch']}, latent {u['latent']})"],
        ["counted", f"{u['counted_nodes']} Conv/Gemm/MatMul nodes, {u['unresolved_nodes']} without shapes"],
        ["runtime", f"{_f(u['runtime_s_per_call'], 4)} s/call = {_f(u['runtime_gflops'], 1)} GFLOP/s"],
        ["torch", f"{_f(u['torch_s_per_call'], 4)} s/call = {_f(u['torch_gflops'], 1)} GFLOP/s"],
        ["measured fp32 GEMM", f"{_f(u['gemm_gflops'], 1)} GFLOP/s ({m['gemm'].get('how', '')})"],
        ["runtime / GEMM", _f(u["gemm_share"], 3)], ["torch / GEMM", _f(u["torch_gemm_share"], 3)]])
    out += ["", f"FLOPs: {u['how']}."]
    so = results["style_overhead"]
    out += ["", "## Style overhead (runtime: style-guided / plain)", ""]
    if so.get("skipped"):
        out.append("Skipped.")
    else:
        k = so["scaled_to_steps"]
        out += _table(["n", "UNet batch", "plain s", "styled s", "ratio", f"ratio scaled to {k} steps", "branch calls"],
                      [[str(b["n"]), str(b["unet_batch"]), _f(b["plain_s"]), _f(b["styled_s"]), _f(b["ratio"]),
                        _f(b["ratio_scaled"]), _f(b["branch_calls"], 0)] for b in so["batches"].values()])
        out += ["", f"Measured at {so['steps']} steps, guidance {so['guidance']}; caches {so['caches']}. "
                f"The target uses {so['ratio_rule']}: {_f(so['ratio'])}. With S computed cold (style encoder "
                f"{_f(so.get('style_encoder_s'))} s, once per style image) the n=1 ratio is "
                f"{_f(so.get('ratio_with_style_encoder'))}."]
    q = results["steps_for_quality"]
    out += ["", "## Steps for quality (runtime)", ""]
    if q.get("skipped"):
        out.append("Skipped.")
    else:
        out += _table(["sampler", "steps", "s / image", "StySim", "content acc."],
                      [[r["scheduler"], str(r["steps"]), _f(r["seconds"]), _g(r["stysim"]), _f(r["content_accuracy"])]
                       for r in q["rows"]])
        out += ["", f"One run each, caches warm. Quality columns: {q['metrics']}."]
    out += optimum_lines(results)
    cold, rss = results["cold_start"], results["peak_rss"]
    out += ["", "## Cold start and peak RSS (fresh process per side)", ""]
    if cold.get("skipped"):
        out.append("Skipped.")
    else:
        def phase(side, key):
            return _f(median(r[key] for r in cold[side]))

        out += _table(["", runtime_label(results), "PyTorch eager", "ratio"], [
            ["to first image, s", _f(cold["runtime_s"]), _f(cold["torch_s"]), _x(cold["speedup"]) + " faster"],
            ["  of which imports, s", phase("runtime", "to_main_s"), phase("torch", "to_main_s"), ""],
            ["  to models loaded, s", phase("runtime", "ready_s"), phase("torch", "ready_s"),
             _f(ready_ratio(cold), 3) + " of torch's"],
            ["peak RSS, MiB", _f(rss["runtime_mb"], 0), _f(rss["torch_mb"], 0), _f(rss["ratio"], 3)]])
        out += ["", f"Cold start: {cold['how']}. Peak RSS: {rss['how']}. Runtime process imported torch: "
                f"{rss['runtime_imported_torch']}. Outputs agree: {cold['agreement']['agree']} "
                f"(max diff {cold['agreement']['max_abs_diff']})."]
    out += ["", "## Machine", ""]
    v = m["versions"]
    out += _table(["", "value"], [
        ["CPU", m["cpu"]], ["cores", f"{m['physical_cores']} physical, {m['logical_cpus']} logical, "
                                     f"{m['usable_cpus']} usable; {m['threads']} threads used"],
        ["memory", f"{m['memory_gb']} GiB"], ["system", m["system"]],
        ["load average", f"{m['load_average_start']} at start, {m.get('load_average_end')} at end"],
        ["other processes' CPU use during the run", _f(m.get("other_processes_cpu_share"), 2) +
         " of all CPUs (from /proc/stat minus this run's own CPU time)"],
        ["fp32 GEMM", f"{_f(m['gemm'].get('gflops'), 1)} GFLOP/s ({m['gemm'].get('blas', '?')})"],
        ["versions", ", ".join(f"{k} {val}" for k, val in v.items())]])
    out += ["", "## Model", ""]
    out += _table(["", "value"], [[k, str(val)] for k, val in model.items()])
    out += [""]
    return "\n".join(out)


def optimum_lines(results: dict) -> list[str]:
    """The optimum-intel section of the markdown report (absent in results written before it existed)."""
    o = results.get("optimum")
    if o is None:
        return []
    out = ["", "## optimum-intel OVStableDiffusionPipeline (plain SD) vs the runtime", ""]
    if o.get("skipped"):
        return out + [f"Not run: {o.get('reason', 'skipped')}."]
    k = o["scaled_to_steps"]
    sides = (("optimum", "optimum-intel, plain"), ("plain", f"{runtime_label(results)}, plain"),
             ("styled", f"{runtime_label(results)}, style-guided"))
    per_image = {"optimum": o["optimum_s"], "plain": o["runtime_plain_s"], "styled": o["runtime_styled_s"]}
    out += _table(["", "s / image", "runs", "per step, ms", "fixed, s", f"s / image at {k} steps", "/ optimum-intel"],
                  [[label, _f(per_image[key]), ", ".join(_f(x) for x in o["runs_s"][key]),
                    _f(o["step_s"][key] * 1000, 1), _f(o["fixed_s"][key]), _f(o["per_image_at_scaled_steps_s"][key]),
                    "" if key == "optimum" else _f(o[f"{key}_ratio"])] for key, label in sides])
    a = o["agreement"]
    out += ["", f"How: {o['how']}. optimum-intel: precision {o['precision']}, {o['versions']}; ready in "
            f"{_f(o['ready_s'])} s in a fresh process (of which load and compile {_f(o['load_s'])} s"
            + (f"; the model was exported to OpenVINO IR first, {_f(o['export_s'])} s" if o.get("export_s") else "")
            + f"). Images: **{'agree' if a['agree'] else 'DISAGREE'}** - {a['compared']}, max diff "
            f"{a['max_abs_diff']} (tolerance {a['tolerance']}), over {a['rounds_compared']} rounds."]
    if o.get("failure"):
        out += ["", f"**The optimum-intel side stopped early** ({o['failure']}): the figures above are the "
                f"{len(o['runs_s']['optimum'])} timed rounds it finished."]
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def stage_plot(results: dict, path: Path) -> Path:
    """Grouped horizontal bars: seconds per image per stage, runtime vs torch (Pillow only)."""
    from PIL import Image, ImageDraw

    st = results["stages"]
    rows = [(name, st["runtime"][name]["seconds"], st["torch"][name]["seconds"]) for name in STAGES]
    peak = max(max(r[1], r[2]) for r in rows) or 1.0
    label_w, bar_w, value_w, bar_h, gap, top = 130, 520, 90, 14, 12, 60
    width = label_w + bar_w + value_w + 20
    height = top + len(rows) * (2 * bar_h + gap) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    e2e = results["end_to_end"]
    draw.text((10, 8), f"Seconds per image by stage - {results['model']['name']}, "
                       f"{results['settings']['scheduler']}-{st['steps']}", fill="black", font=font)
    draw.text((10, 28), f"end to end: runtime {_f(e2e['runtime_s'])} s, torch {_f(e2e['torch_s'])} s "
                        f"({_x(e2e['speedup'])})", fill=(60, 60, 60), font=small)
    y = top
    for name, runtime_s, torch_s in rows:
        draw.text((10, y + bar_h // 2), name, fill="black", font=small)
        for offset, (side, value) in enumerate((("runtime", runtime_s), ("torch", torch_s))):
            y0 = y + offset * bar_h
            length = int(bar_w * value / peak)
            draw.rectangle([label_w, y0, label_w + max(length, 1), y0 + bar_h - 2], fill=COLOURS[side])
            draw.text((label_w + length + 6, y0), f"{value:.3f}", fill=(40, 40, 40), font=small)
        y += 2 * bar_h + gap
    for i, (side, label) in enumerate(((SIDES[0][0], runtime_label(results)), SIDES[1])):
        x = label_w + i * 170
        draw.rectangle([x, y + 8, x + 14, y + 20], fill=COLOURS[side])
        draw.text((x + 20, y + 6), label, fill="black", font=small)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
