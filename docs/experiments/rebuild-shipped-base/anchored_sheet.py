"""Sample a bundle on anchored swatches (training distribution) and held-out judge swatches; judge; write a sheet."""
import sys, numpy as np, tempfile
from pathlib import Path
from PIL import Image
from stylegen_trt.demo import data, texture_judge
from stylegen_trt.engines.base import EngineOptions
from stylegen_trt.runtime.bundle import open_bundle
from stylegen_trt.runtime.images import save_png
from stylegen_trt.runtime.pipeline import GenerationRequest, StylePipeline, StyleRequest
bundle, out = Path(sys.argv[1]), Path(sys.argv[2])
tmp = Path(tempfile.mkdtemp())
rng = np.random.default_rng(77)
styles = [(f, data.render(None, data.Style(f, *data.random_palette(rng), data.ANCHORED_PERIOD, a, 0.0, anchored=True)))
          for f in range(len(data.TEXTURES)) for a in data.ANCHORED_ANGLES]
pipe = StylePipeline(open_bundle(bundle), EngineOptions(threads=2), style_cache_dir=tmp / "cache")
judge = texture_judge.load()
prompts = ["a large circle in the center", "a small square on the left"]
rows, fams, imgs = [], [], []
for k, (f, sw) in enumerate(styles):
    save_png(sw, tmp / f"s{k}.png")
    row = [sw]
    for seed in (0, 1):
        for p in prompts:
            im = pipe.generate(GenerationRequest(p, seed=seed, style=StyleRequest((tmp / f"s{k}.png",)))).images[0]
            row.append(im); imgs.append(im); fams.append(f)
    rows.append(np.concatenate(row, 1))
pred = texture_judge.classify(judge, np.stack(imgs))
fams = np.array(fams)
print("anchored swatches: family match %.1f%%" % (100 * (pred == fams).mean()),
      {data.TEXTURES[f]: round(float((pred[fams == f] == f).mean()), 2) for f in range(7)})
sheet = np.concatenate(rows, 0)
Image.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), Image.NEAREST).save(out)
