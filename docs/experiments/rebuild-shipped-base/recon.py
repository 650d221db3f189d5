"""Rebuild torch modules (diffusers layout) of the shipped demo bundle from its ONNX weights.

Fresh modules of the recipe's architecture (commit 9a04195, checked out at /work/old) get unique random
values and are exported by that commit's exporter; each exported initializer is matched to the parameter
whose values it holds (possibly transposed or reshaped). The shipped graphs were later upgraded in place
(export/upgrade.py), so names differ, but both graphs' weight sequences (op, shape, in node order) align
one to one (checked): the shipped initializer at the same position gives the parameter's value.
"""
import sys, json, hashlib, shutil
sys.path.insert(0, "/work/old")
from pathlib import Path
import numpy as np, onnx, torch
from onnx import numpy_helper
import stylegen_trt
assert stylegen_trt.__file__.startswith("/work/old")
from stylegen_trt.models import loaders
from stylegen_trt.demo import data
from stylegen_trt.demo.train import write_tokenizer, MAX_TOKENS
from stylegen_trt.export.bundle import export_bundle
from stylegen_trt.export.graphs import ExportLimits
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
torch.set_num_threads(1)
SHIPPED = Path("/work/main/stylegen_trt/demo/bundle")
work = Path("/work/ship/recon"); sd = work / "sd"
tokenizer = write_tokenizer(work)
text_encoder = CLIPTextModel(CLIPTextConfig(
    vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=64,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
unet = UNet2DConditionModel(
    sample_size=data.IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64, 64, 64), norm_num_groups=16, cross_attention_dim=64, attention_head_dim=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                    block_out_channels=(32, 64), norm_num_groups=16, sample_size=data.IMAGE_SIZE,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
g = torch.Generator().manual_seed(0)
modules = {"unet": unet, "text_encoder": text_encoder, "vae": vae}
with torch.no_grad():
    for m in modules.values():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
vae.register_to_config(scaling_factor=0.7018985615887663)
loaders.save_sd_dir(sd, text_encoder, unet, vae)
sched = {**loaders.SD15_SCHEDULER_CONFIG, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
         "prediction_type": "v_prediction"}
(sd / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
loaders.make_tiny_vgg(work / "vgg19.pth", 0)
base = loaders.load_base(sd)
encoder = loaders.load_style_encoder(work / "vgg19.pth")
branch = loaders.new_branch(base, seed=0, stem_hidden=32)
limits = ExportLimits(min_size=16, max_size=64, native_size=data.IMAGE_SIZE, max_images=24,
                      style_image_size=data.IMAGE_SIZE, max_styles=4)
fresh = work / "fresh-bundle"
if not fresh.is_dir():
    export_bundle(base, encoder, branch, fresh, limits, description={}, defaults={"guidance": 4.0, "style_scale": 1.5})

def key(a):
    return hashlib.sha1(np.sort(np.asarray(a, np.float32).ravel()).tobytes()).hexdigest()

graph_module = {"unet": base.unet, "text_encoder": base.text_encoder, "vae_decoder": base.vae}
from align import weight_sequence
for graph, module in graph_module.items():
    params = {key(p.detach().numpy()): (n, p) for n, p in module.named_parameters()}
    fresh_seq = weight_sequence(fresh / f"{graph}.onnx")
    ship_seq = weight_sequence(SHIPPED / f"{graph}.onnx")
    assert [(o, a.shape) for _, o, a in fresh_seq] == [(o, a.shape) for _, o, a in ship_seq]
    done, skipped = set(), 0
    for (name, _, arr), (_, _, src) in zip(fresh_seq, ship_seq):
        k = key(arr)
        if k not in params:
            skipped += 1
            continue
        pname, p = params[k]
        fa = np.asarray(arr, np.float32); pv = p.detach().numpy(); src = np.asarray(src, np.float32)
        if fa.shape == pv.shape and np.array_equal(fa, pv):
            val = src
        elif fa.ndim == 2 and fa.T.shape == pv.shape and np.array_equal(fa.T, pv):
            val = src.T
        elif np.array_equal(fa.reshape(pv.shape), pv):
            val = src.reshape(pv.shape)
        else:
            raise SystemExit(f"{graph}: {name} matches {pname} by values but not by layout")
        assert pname not in done, pname
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.ascontiguousarray(val)))
        done.add(pname)
    names = {n for n, _ in module.named_parameters()}
    missing = sorted(names - done)
    if graph == "vae_decoder":
        missing = [n for n in missing if n.startswith(("decoder", "post_quant"))]
    print(graph, "set", len(done), "skipped initializers", skipped, "missing params", missing[:10], len(missing))
torch.save({"unet": base.unet.state_dict(), "text_encoder": base.text_encoder.state_dict(),
            "vae_decoder": {k: v for k, v in base.vae.state_dict().items() if k.startswith(("decoder", "post_quant"))}},
           work / "shipped-weights.pt")
