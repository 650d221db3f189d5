"""usage: python sheet.py BUNDLE PROMPT OUT.png STYLE_SCALE SWATCH[,SWATCH...] (names from texture_judge.eval_swatches)
Sheet: for each swatch a row: swatch, then guided images of PROMPT for seeds 0..3, then off for seeds 0..3."""
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from stylegen_trt.demo import texture_judge
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.pipeline import StylePipeline
from stylegen_trt.runtime.requests import build_request
from stylegen_trt.runtime.images import save_png
from stylegen_trt.cli import engine_options
bundle, prompt, out, scale = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
names = sys.argv[5].split(",")
sw = dict(texture_judge.eval_swatches())
b = open_bundle(Path(bundle))
rows = []
with StylePipeline(b, engine_options("ort", "auto", threads=1)) as pipe:
    for name in names:
        save_png(sw[name], Path(f"{name}.png"))
        cells = [np.array(Image.fromarray(sw[name]).resize((32, 32), Image.NEAREST))]
        for style in ((Path(f"{name}.png"),), ()):
            for seed in range(4):
                img = pipe.generate(build_request(b.manifest, (prompt,), styles=style, seed=seed, style_scale=scale)).images[0]
                cells.append(img)
        rows.append(np.concatenate(cells, 1))
sheet = np.concatenate(rows, 0)
Image.fromarray(sheet).resize((sheet.shape[1] * 6, sheet.shape[0] * 6), Image.NEAREST).save(out)
print("wrote", out)
