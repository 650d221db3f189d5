"""For PROMPT: generate guided images for every held-out swatch x seeds 0,1 at scale 1; print what the content judge sees."""
import sys, collections
from pathlib import Path
import numpy as np
from PIL import Image
from stylegen_trt.demo import texture_judge, classifier, data
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.pipeline import StylePipeline
from stylegen_trt.runtime.requests import build_request
from stylegen_trt.runtime.images import save_png
from stylegen_trt.cli import engine_options
bundle, prompt, out = sys.argv[1], sys.argv[2], sys.argv[3]
sw = texture_judge.eval_swatches()
b = open_bundle(Path(bundle)); model = classifier.load()
imgs, names = [], []
with StylePipeline(b, engine_options("ort", "auto", threads=2)) as pipe:
    for name, s in sw:
        save_png(s, Path(f"{name}.png"))
        for seed in range(2):
            imgs.append(pipe.generate(build_request(b.manifest, (prompt,), styles=(Path(f"{name}.png"),), seed=seed, style_scale=1.0)).images[0]); names.append(name)
imgs = np.stack(imgs)
pred = classifier.predict(model, imgs)
want = data.parse_prompt(prompt)
cnt = collections.Counter()
for n, p in zip(names, pred):
    ok = classifier.matches(p, want)
    cnt[(data.SHAPES[p.shape], data.POSITIONS[p.position], data.SIZES[p.size])] += 1
    print(n, ok, data.SHAPES[p.shape], data.POSITIONS[p.position], data.SIZES[p.size])
print(cnt)
grid = imgs.reshape(7, 6, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(7 * 32, 6 * 32, 3)
Image.fromarray(grid).resize((6 * 32 * 5, 7 * 32 * 5), Image.NEAREST).save(out)
