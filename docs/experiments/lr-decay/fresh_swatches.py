"""42 held-out swatches no model was chosen on: texture_judge.eval_swatches(per_family=2, seed=2), written to DIR.
usage: python fresh_swatches.py DIR   (then: bash sw2_eval.sh BUNDLE OUT.json, which reads /work/look/sw2)"""
import sys
from pathlib import Path

from PIL import Image

from stylegen_trt.demo import texture_judge as tj

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for name, image in tj.eval_swatches(per_family=2, seed=2):
    Image.fromarray(image).save(out / f"{name}.png")
