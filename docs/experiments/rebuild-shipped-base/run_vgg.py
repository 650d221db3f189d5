import logging, torch
from pathlib import Path
from stylegen_trt.demo.train import DemoConfig, train_style_vgg
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO)
train_style_vgg(Path("/work/vgg800"), DemoConfig(vgg_steps=800))
