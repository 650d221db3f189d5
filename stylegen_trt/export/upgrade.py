"""Bring a bundle exported before per-image residuals up to date, without its torch weights.

Older UNet graphs took residuals of batch 1 only (one style per UNet call). Today's export
expands each residual to the UNet's batch inside the graph (``ResidualUNet``), so a call can
carry one style per image. This rewrites an older ``unet.onnx`` the same way - an ``Expand`` of
each residual input to the sample's batch - and updates the manifest's contract and hashes.

    python -m stylegen_trt.export.upgrade BUNDLE_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
from onnx import helper, numpy_helper

from stylegen_trt.files import MANIFEST_NAME, atomic_write_bytes, sha256_file

AXIS = "residual_batch"


def per_image_residuals(bundle: Path) -> bool:
    """Rewrite ``bundle``'s UNet to take residuals of batch 1 or the UNet's batch; False if it already does."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    unet = manifest["graphs"]["unet"]
    residual_names = {t["name"] for t in manifest["graphs"]["style_branch"]["outputs"]}
    targets = [t for t in unet["inputs"] if t["name"] in residual_names and t["dims"][0] == 1]
    if not targets:
        return False
    path = bundle / unet["file"]
    model = onnx.load(str(path))
    graph = model.graph
    import numpy as np

    graph.initializer.append(numpy_helper.from_array(np.ones(3, np.int64), "residual_expand_tail"))
    nodes = [helper.make_node("Shape", ["sample"], ["residual_expand_batch"], start=0, end=1),
             helper.make_node("Concat", ["residual_expand_batch", "residual_expand_tail"],
                              ["residual_expand_shape"], axis=0)]
    names = {t["name"] for t in targets}
    for node in graph.node:  # consumers read the expanded copy
        node.input[:] = [f"{i}_expanded" if i in names else i for i in node.input]
    for name in sorted(names):
        nodes.append(helper.make_node("Expand", [name, "residual_expand_shape"], [f"{name}_expanded"]))
    for value in graph.input:
        if value.name in names:
            value.type.tensor_type.shape.dim[0].Clear()
            value.type.tensor_type.shape.dim[0].dim_param = AXIS
    new_nodes = nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale batch-1 shapes; inferred again below
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())

    for t in targets:
        t["dims"][0] = AXIS
    unet["axes"][AXIS] = {"min": 1, "opt": 1, "max": unet["axes"]["unet_batch"]["max"]}
    manifest["files"][unet["file"]] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    atomic_write_bytes(bundle / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    return True


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: {'upgraded' if per_image_residuals(Path(arg)) else 'already per-image'}")
