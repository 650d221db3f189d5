"""Average the float initializers of same-structure ONNX bundles (a weight soup). usage: soup.py OUT A B [C...] [--weights w1,w2,..]"""
import sys, shutil, pathlib, numpy as np, onnx
from onnx import numpy_helper
args = sys.argv[1:]
weights = None
if "--weights" in args:
    i = args.index("--weights"); weights = [float(v) for v in args[i + 1].split(",")]; del args[i:i + 2]
out, srcs = pathlib.Path(args[0]), [pathlib.Path(a) for a in args[1:]]
weights = weights or [1.0 / len(srcs)] * len(srcs)
shutil.copytree(srcs[0], out)
for name in ("unet.onnx", "style_branch.onnx", "text_encoder.onnx", "vae_decoder.onnx", "style_encoder.onnx"):
    models = [onnx.load(str(s / name)) for s in srcs]
    inits = [{t.name: t for t in m.graph.initializer} for m in models]
    changed = 0
    for t in models[0].graph.initializer:
        arrays = [numpy_helper.to_array(d[t.name]) for d in inits]
        if arrays[0].dtype.kind != "f" or all(np.array_equal(arrays[0], a) for a in arrays[1:]):
            continue
        mix = sum(w * a.astype(np.float64) for w, a in zip(weights, arrays)).astype(arrays[0].dtype)
        t.CopyFrom(numpy_helper.from_array(mix, t.name)); changed += 1
    onnx.save(models[0], str(out / name))
    print(name, "initializers averaged:", changed, "of", len(models[0].graph.initializer))
import hashlib, json
manifest = json.loads((out / "manifest.json").read_text())
for name, entry in manifest["files"].items():
    data = (out / name).read_bytes()
    entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
manifest.setdefault("description", {})
(out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
shutil.rmtree(out / "engines", ignore_errors=True)
