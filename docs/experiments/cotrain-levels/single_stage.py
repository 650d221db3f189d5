"""One co-training stage from the shipped base, every setting of the best chained pair from its first step, with
some of the branch's residual outputs cut off for the whole run (a forward hook multiplies those projections'
outputs by 0, so the pair learns without them). The question: with down_res_3 (the residual that costs the shape)
never there, does the base keep its content while the coarse levels learn the texture?
WORK holds sd/ (a copy of the rebuilt shipped base, ../rebuild-shipped-base/) and vgg19.pth (the VGG stage, 800
steps); the teacher of the content hold is the base as the stage finds it, i.e. the shipped base.
usage: CUT=3 [THREADS=1] [HOLD=0.5] python single_stage.py WORK STEPS SEED   (CUT= empty: the control, nothing cut;
HOLD: the share of each batch held to the base as found, base_style_content_hold, 0 = free co-training; SOURCE
[texture] base_style_source, SHAPE_WEIGHT [5] and SHAPE_MARGIN [1.5] the shape-weighted v-MSE, 1 and 0 = plain)
After the run, zero_cut.py sets the cut projections' weights to 0 in WORK/branch-init.safetensors before export."""
import json, logging, os, sys, time
from pathlib import Path
import torch
from stylegen_trt.demo import train as demo_train

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
work, steps, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
from cut import CUT  # importing it wraps loaders.new_branch: the stage's fresh branch has the cut
cfg = demo_train.DemoConfig(seed=seed, base_style_steps=steps, branch_layout="anchored", base_style_content_hold=float(os.environ.get("HOLD", "0.5")),
                            base_style_source=os.environ.get("SOURCE", "texture"),
                            base_style_shape_weight=float(os.environ.get("SHAPE_WEIGHT", "5.0")),
                            base_style_shape_margin=float(os.environ.get("SHAPE_MARGIN", "1.5")),
                            threads=int(os.environ.get("THREADS", "2")))
torch.set_num_threads(cfg.threads)
t0 = time.perf_counter()
demo_train.train_base_with_style(work, cfg)
(work / "seconds.json").write_text(json.dumps({"base_style": round(time.perf_counter() - t0, 1), "cut": CUT, "hold": cfg.base_style_content_hold,
                                                   "source": cfg.base_style_source, "shape_weight": cfg.base_style_shape_weight,
                                                   "shape_margin": cfg.base_style_shape_margin}))
print("seconds", round(time.perf_counter() - t0, 1))
