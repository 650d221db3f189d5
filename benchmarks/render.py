"""Re-render RESULTS.md-style Markdown and the stage-breakdown PNG from a bench JSON, without re-running.

    python benchmarks/render.py benchmarks/results/small.json --markdown benchmarks/RESULTS.md \
        --plot benchmarks/results/small-stages.png
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from stylegen_trt.bench import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="written by `stylegen-trt bench --json`")
    parser.add_argument("--markdown", type=Path, help="Markdown output (default: print to stdout)")
    parser.add_argument("--plot", type=Path, help="stage-breakdown PNG output")
    args = parser.parse_args()
    results = json.loads(args.json.read_text())
    if args.plot:
        report.stage_plot(results, args.plot)
    base = args.markdown.parent if args.markdown else Path.cwd()
    text = report.markdown(results, os.path.relpath(args.plot, base) if args.plot else None)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
