"""'a small circle on the left' (or eval's prompt number INDEX, 0-7) over the eval's 21 swatches, sampler seeds 0-3, generated as `eval` generates them (the
acceptance test's 8 prompts in one batch per seed), each cell framed by the fixed content judge's verdict: green =
the prompt's shape and position, red = what it read instead (printed). One row per swatch, the swatch first.
Record of a look.
usage: python small_circles.py BUNDLE OUT.png [INDEX]"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from stylegen_trt.cli import engine_options
from stylegen_trt.demo import classifier, data, texture_judge
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.pipeline import StylePipeline
from stylegen_trt.runtime.requests import build_request

bundle, out = Path(sys.argv[1]), Path(sys.argv[2])
contents = data.all_contents()[::3]  # eval's demo prompts; the first is the small circle on the left
prompts = tuple(c.prompt for c in contents)
index = int(sys.argv[3]) if len(sys.argv) > 3 else 0
wanted = contents[index]
swatch_dir = out.parent / "swatches.tmp"
swatch_dir.mkdir(exist_ok=True)
model = classifier.load()
b = open_bundle(bundle)
rows, wrong = [], 0


def framed(image: np.ndarray, colour) -> np.ndarray:
    return np.pad(image, ((1, 1), (1, 1), (0, 0)), constant_values=0) + np.pad(
        np.zeros_like(image), ((1, 1), (1, 1), (0, 0)), constant_values=1) * np.array(colour, np.uint8)


with StylePipeline(b, engine_options("ort", "auto", threads=1)) as pipe:
    for name, swatch in texture_judge.eval_swatches():
        path = swatch_dir / f"{name}.png"
        Image.fromarray(swatch).save(path)
        row = [framed(np.array(Image.fromarray(swatch).resize((32, 32), Image.NEAREST)), (255, 255, 255))]
        for seed in range(4):
            image = pipe.generate(build_request(b.manifest, prompts, styles=(path,), seed=seed)).images[index:index + 1]
            image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8) if image.dtype != np.uint8 else image
            seen = classifier.predict(model, image)[0]
            ok = (seen.shape, seen.position) == (wanted.shape, wanted.position)
            wrong += not ok
            if not ok:
                print(name, seed, "read as", data.SHAPES[seen.shape], data.POSITIONS[seen.position])
            row.append(framed(image[0], (0, 200, 0) if ok else (230, 0, 0)))
        rows.append(np.concatenate(row, 1))
        path.unlink()
swatch_dir.rmdir()
sheet = np.concatenate(rows, 0)
Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(out)
print(f"{wrong} of {4 * len(rows)} read wrong by the fixed judge")
