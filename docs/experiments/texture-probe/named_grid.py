"""Named-family samples of a base (no style): rows = families named in the caption, columns = 4 seeds,
one prompt ('a large circle in the centre'). Written as a PNG with 4x nearest-neighbour upscale."""
import sys
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
from pathlib import Path
from stylegen_trt.demo import data
from stylegen_trt.demo.diagnose import _reference, _latents
from stylegen_trt.runtime.images import save_png
work = Path(sys.argv[1]); ref = _reference(work / "sd", None, work)
c = data.Content(0, 1, 1)
rows = []
for fam in range(len(data.TEXTURES)):
    imgs = ref.generate(c.prompt_with_texture(fam), _latents(100, 4), guidance=4.0, rng=np.random.default_rng(0))
    rows.append(np.concatenate(list(imgs), axis=1))
grid = np.concatenate(rows, axis=0).repeat(4, 0).repeat(4, 1)
save_png(grid, sys.argv[2])
print(c.prompt_with_texture(0), grid.shape)
