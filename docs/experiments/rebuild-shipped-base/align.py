import onnx, numpy as np
from onnx import numpy_helper
def weight_sequence(path, min_size=2):
    g = onnx.load(path).graph
    inits = {i.name: i for i in g.initializer}
    seq, seen = [], set()
    for node in g.node:
        for inp in node.input:
            if inp in inits and inp not in seen:
                seen.add(inp)
                a = numpy_helper.to_array(inits[inp])
                if a.size >= min_size and a.dtype == np.float32:
                    seq.append((inp, node.op_type, a))
    return seq
if __name__ == "__main__":
    for graph in ["unet", "text_encoder", "vae_decoder"]:
        f = weight_sequence(f"/work/ship/recon/fresh-bundle/{graph}.onnx")
        s = weight_sequence(f"/work/main/stylegen_trt/demo/bundle/{graph}.onnx")
        fs = [(op, a.shape) for _, op, a in f]; ss = [(op, a.shape) for _, op, a in s]
        print(graph, len(fs), len(ss), fs == ss)
        if fs != ss:
            for i, (x, y) in enumerate(zip(fs, ss)):
                if x != y: print(" first diff", i, x, y, f[i][0], s[i][0]); break
