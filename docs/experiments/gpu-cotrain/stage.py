"""One free co-training stage from the shipped base (as ../cotrain-levels/single_stage.py with CUT= HOLD=0) on
DEVICE (cuda), batches prefetched in worker processes (prefetch.py). Settings from the environment, each
defaulting to the best CPU stage (texture-S, plain v-MSE): SOURCE, SHAPE_WEIGHT, BASE_LR, BRANCH_LR,
STYLE_DROPOUT, HOLD, LR_DECAY_STEPS, OUTLINE_WIDTHS (as "0:1.5,10500:2.5"), HATCH_PERIODS
(DemoConfig.anchored_hatching_periods as "0:7.5,10500:6.5"), SHAPE_WEIGHTING.
WORK holds sd/ (the rebuilt shipped base) and vgg19.pth (the 800-step VGG stage).
usage: [DEVICE=cuda] [PREFETCH=1] python stage.py WORK STEPS SEED"""
import json, logging, os, sys, time
from pathlib import Path

import torch

from stylegen_trt.demo import train as demo_train

if os.environ.get("PREFETCH", "1") == "1":  # 0 on a 2-core CPU, where workers only compete with the step
    import prefetch  # noqa: F401  (patches the stage's batches)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work, steps, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    env = os.environ.get
    default = demo_train.DemoConfig()
    cfg = demo_train.DemoConfig(seed=seed, base_style_steps=steps, branch_layout="anchored",
                                base_style_content_hold=float(env("HOLD", "0")),
                                base_style_source=env("SOURCE", "texture"),
                                base_style_shape_weight=float(env("SHAPE_WEIGHT", "1")),
                                base_style_shape_weighting=env("SHAPE_WEIGHTING", default.base_style_shape_weighting),
                                base_style_learning_rate=float(env("BASE_LR", default.base_style_learning_rate)),
                                base_style_branch_learning_rate=float(env("BRANCH_LR", default.base_style_branch_learning_rate)),
                                style_dropout=float(env("STYLE_DROPOUT", default.style_dropout)),
                                anchored_hatching_periods=demo_train.parse_hatching_periods(
                                    env("HATCH_PERIODS", demo_train.format_hatching_periods(default.anchored_hatching_periods))),
                                base_style_lr_decay_steps=int(env("LR_DECAY_STEPS", "0")),
                                outline_widths=demo_train.parse_outline_widths(
                                    env("OUTLINE_WIDTHS", demo_train.format_outline_widths(default.outline_widths))),
                                threads=int(env("THREADS", "2")),
                                checkpoint_every=int(env("CHECKPOINT_EVERY", default.checkpoint_every)))
    torch.set_num_threads(cfg.threads)
    device = env("DEVICE", "cuda")
    fields = ("seed", "base_style_steps", "base_style_content_hold", "base_style_source", "base_style_shape_weight",
              "base_style_learning_rate", "base_style_branch_learning_rate", "style_dropout", "anchored_hatching_periods",
              "base_style_shape_weighting", "base_style_lr_decay_steps", "outline_widths")
    settings = {"device": device, **{k: getattr(cfg, k) for k in fields}}
    (work / "seconds.json").write_text(json.dumps(settings))  # what a stage stopped early was
    t0 = time.perf_counter()
    demo_train.train_base_with_style(work, cfg, device=device)
    seconds = round(time.perf_counter() - t0, 1)
    (work / "seconds.json").write_text(json.dumps({"base_style": seconds, **settings}))
    if "prefetch" in sys.modules:
        sys.modules["prefetch"].CURRENT[-1].pool.shutdown()
    print("seconds", seconds)
