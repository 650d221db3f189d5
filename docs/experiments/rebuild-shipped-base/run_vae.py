import logging, sys, torch
sys.path.insert(0, "/work/old")
from pathlib import Path
import stylegen_trt
assert stylegen_trt.__file__.startswith("/work/old"), stylegen_trt.__file__
from stylegen_trt.demo.train import DemoConfig, train_vae
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO)
vae = train_vae(Path("/work/ship"), DemoConfig())
print("scaling_factor", repr(vae.config.scaling_factor))
