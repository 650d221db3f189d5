"""How far each UNet (diffusers dirs given as arguments: SD_DIR/unet) is from the shipped base's: mean squared
difference of v predictions, residuals off, on 64 random-phase training images at random t (and at t > 600).
usage: python dist.py SD_DIR [SD_DIR ...]"""
import sys, torch, numpy as np
from diffusers import UNet2DConditionModel, DDPMScheduler
from stylegen_trt.models import loaders
from stylegen_trt.demo import train as T, data
from stylegen_trt.training.branch import encode_latents
torch.set_num_threads(2)
teacher = loaders.load_base("/work/ship/sd")
gen = torch.Generator().manual_seed(5)
images, prompts = next(T.batches(99, 64, texture_phase="random"))
x0 = encode_latents(teacher, images, gen); ctx = teacher.encode_prompts(prompts)
noise = torch.randn(x0.shape, generator=gen); t = torch.randint(0, 1000, (64,), generator=gen)
sch = DDPMScheduler.from_config(teacher.scheduler_config)
xt = sch.add_noise(x0, noise, t); v = sch.get_velocity(x0, noise, t)
with torch.no_grad():
    ref = teacher.unet(xt, t.float(), ctx, return_dict=False)[0]
    print("teacher vs data v", float(((ref - v) ** 2).mean()))
    for d in sys.argv[1:]:
        u = UNet2DConditionModel.from_pretrained(d + "/unet").float().eval()
        p = u(xt, t.float(), ctx, return_dict=False)[0]
        hi = t > 600
        print(d, "vs teacher", float(((p - ref) ** 2).mean()), "t>600", float(((p - ref)[hi] ** 2).mean()), "vs v", float(((p - v) ** 2).mean()))
