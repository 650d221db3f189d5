"""/work/ship/sd: the shipped demo base as torch modules (diffusers layout), checked against the shipped ONNX."""
import sys, json
sys.path.insert(0, "/work/old")
from pathlib import Path
import numpy as np, torch, onnxruntime as ort
import stylegen_trt
assert stylegen_trt.__file__.startswith("/work/old")
from stylegen_trt.models import loaders
from stylegen_trt.demo import data
from stylegen_trt.demo.train import write_tokenizer, batches
from stylegen_trt.export.bundle import export_bundle
from stylegen_trt.export.graphs import ExportLimits
from diffusers import AutoencoderKL
torch.set_num_threads(1)
SHIPPED = Path("/work/main/stylegen_trt/demo/bundle")
work = Path("/work/ship"); sd = work / "sd"
ref = loaders.load_base("/work/ship/recon/sd")   # the architecture, random values
weights = torch.load("/work/ship/recon/shipped-weights.pt")
ref.unet.load_state_dict(weights["unet"]); ref.text_encoder.load_state_dict(weights["text_encoder"])
vae = AutoencoderKL.from_pretrained(sd / "vae")
print("scaling factor", repr(vae.config.scaling_factor), "shipped 0.7018985615887663")
state = vae.state_dict(); state.update(weights["vae_decoder"]); vae.load_state_dict(state)
write_tokenizer(work)
loaders.save_sd_dir(sd, ref.text_encoder, ref.unet, vae)
(sd / "scheduler" / "scheduler_config.json").write_text((Path("/work/ship/recon/sd/scheduler/scheduler_config.json")).read_text())
base = loaders.load_base(sd)
# 1. tokenizer: same ids as the bundle's tokenizer.json for every demo prompt
from tokenizers import Tokenizer
tok = Tokenizer.from_file(str(SHIPPED / "tokenizer.json"))
prompts = [data.Content(s, p, z).prompt for s in range(4) for p in range(3) for z in range(2)] + [""]
a = base.tokenizer(prompts, padding="max_length", max_length=16, truncation=True).input_ids
b = [e.ids for e in tok.encode_batch(prompts)]
print("tokenizer ids equal (up to padding):", all(x[:len(y)] == y[:16] for x, y in zip(a, b)), a[0], b[0])
# 2. the graphs: exported again from these modules, same outputs as the shipped ONNX
loaders.make_tiny_vgg(work / "vgg19.pth", 0)
enc = loaders.load_style_encoder(work / "vgg19.pth")
limits = ExportLimits(min_size=16, max_size=64, native_size=data.IMAGE_SIZE, max_images=24, style_image_size=data.IMAGE_SIZE, max_styles=4)
out = work / "check-bundle"
if not out.is_dir():
    export_bundle(base, enc, loaders.new_branch(base), out, limits, description={}, defaults={"guidance": 4.0, "style_scale": 1.5})
rng = np.random.default_rng(0)
feeds = {"text_encoder": {"input_ids": np.array(b[:3], np.int64)[:, :16] if len(b[0]) >= 16 else None},
         "vae_decoder": {"latent": rng.standard_normal((3, 4, 16, 16)).astype(np.float32)}}
ids = np.array(a[:3], np.int64); feeds["text_encoder"] = {"input_ids": ids}
s = ort.InferenceSession(str(SHIPPED / "unet.onnx"))
uf = {}
for i in s.get_inputs():
    shape = [3 if isinstance(d, str) and "batch" in d else d for d in i.shape]
    shape = [{"latent_h": 16, "latent_w": 16, "latent_h_2": 8, "latent_w_2": 8, "latent_h_4": 4, "latent_w_4": 4,
              "latent_h_8": 2, "latent_w_8": 2}.get(d, d) for d in shape]
    uf[i.name] = (np.array([500.0], np.float32) if i.name == "timestep" else
                  rng.standard_normal(shape).astype(np.float32) * (0.3 if "res" in i.name else 1))
feeds["unet"] = uf
for g, f in feeds.items():
    x = ort.InferenceSession(str(SHIPPED / f"{g}.onnx")).run(None, f)[0]
    y = ort.InferenceSession(str(out / f"{g}.onnx")).run(None, f)[0]
    print(g, "max |shipped - rebuilt|", float(np.abs(x - y).max()), "of max", float(np.abs(x).max()))
# 3. the re-run encoder with the shipped decoder: reconstruction as the decoder fine-tune left it
images, _ = next(batches(99, 64))
with torch.no_grad():
    x = images * 2 - 1
    r = base.vae.decode(base.vae.encode(x).latent_dist.mean).sample
print("reconstruction L1+MSE", float(torch.nn.functional.l1_loss(r, x) + torch.nn.functional.mse_loss(r, x)))
