"""Render benchmarks/RESULTS.md from one or more bench JSONs, without re-running anything.

    python benchmarks/render.py benchmarks/results/demo.json benchmarks/results/small.json \
        benchmarks/results/sd15.json --markdown benchmarks/RESULTS.md --analysis benchmarks/analysis.md

One section per JSON (in the order given), each with its stage-breakdown PNG written beside the
JSON, after a table of every target by config; the hand-written analysis (why a target is missed,
read from the profiles) is appended as is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from stylegen_trt.bench import report, summary


def _demote(markdown: str) -> str:
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())


def _label(results: dict) -> str:
    """A column's name: the config, plus the backend and precision when not ONNX Runtime's fp32 default."""
    settings = results.get("settings") or {}
    backend = settings.get("backend", "ort")
    isa = (results.get("machine") or {}).get("vector_isa")
    where = f" ({isa})" if isa else ""  # results from before the field: the bf16 machine's
    steps = settings.get("steps")
    name = results["model"]["name"] + (f" {steps} steps" if steps and results["model"]["name"] == "sd15" else "")
    if backend == "ort":
        return name + where
    precision = settings.get("precision", "auto")
    return f"{name}, {backend}{'' if precision == 'auto' else ' ' + precision}{where}"


def render(paths: list[Path], out: Path, analysis: Path | None, extra: list[Path] = ()) -> str:
    runs = [(p, json.loads(p.read_text())) for p in paths]
    runs = [(p, r) for p, r in runs if "targets" in r]  # bench's JSONs; bench-serve's come in through --extra
    for _, r in runs:  # the project's goals as they are now, judged on the stored figures
        r["targets"] = [t.to_dict() for t in summary.targets(r)]
    names = [_label(r) for _, r in runs]
    lines = ["# stylegen-trt benchmark results", "",
             "Every figure below was measured on this project's CPU machine by the command quoted in its "
             "section; ratios come from one run each. Re-render with `python benchmarks/render.py "
             + " ".join(os.path.relpath(p, out.parent.parent) for p, _ in runs) + " --markdown benchmarks/RESULTS.md"
             + (f" --analysis {os.path.relpath(analysis, out.parent.parent)}" if analysis else "")
             + "".join(f" --extra {os.path.relpath(e, out.parent.parent)}" for e in extra) + "`.", "",
             "## Targets by config", "",
             "| target | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    target_names = list(dict.fromkeys(t["name"] for _, r in runs for t in r["targets"]))
    for name in target_names:
        cells = []
        for _, r in runs:
            t = next((t for t in r["targets"] if t["name"] == name), None)
            cell = "-" if t is None else f"{report._f(t['value'], 3)} ({t['op']} {t['threshold']}): {report._met(t['met'])}"
            so = r.get("style_overhead") or {}
            if t is not None and name.startswith("style-guided") and so.get("scaled_to_steps", 50) < 50:
                # runs before the harness scaled to DDPM-50: the fixed VAE cost dilutes a reduced run's ratio
                cell += f" at {so['scaled_to_steps']} steps only; DDPM-50: see the analysis"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for path, results in runs:
        plot = path.with_name(path.stem + "-stages.png")
        report.stage_plot(results, plot)
        lines += [_demote(report.markdown(results, os.path.relpath(plot, out.parent))), ""]
    for section in extra:  # e.g. bench-serve's report; its images are named relative to it
        text = section.read_text()
        rel = os.path.relpath(section.parent, out.parent)
        text = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({os.path.join(rel, m.group(1))})", text)
        lines += [text, ""]
    if analysis is not None:
        lines += [_demote(analysis.read_text()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+", help="written by `stylegen-trt bench --json`")
    parser.add_argument("--markdown", type=Path, default=Path("benchmarks/RESULTS.md"))
    parser.add_argument("--analysis", type=Path, help="hand-written Markdown appended at the end")
    parser.add_argument("--extra", type=Path, action="append", default=[],
                        help="a Markdown section appended as is before the analysis (bench-serve --markdown)")
    args = parser.parse_args()
    args.markdown.write_text(render(args.json, args.markdown, args.analysis, args.extra))


if __name__ == "__main__":
    main()
