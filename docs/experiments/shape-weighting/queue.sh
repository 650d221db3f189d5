#!/bin/bash
# wait for co-training stage TAG (/work/TAG) to finish, export it, eval seeds 0-1 (and 2-3, 4-5 if MORE=1)
T=$1; W=2
HERE=/work/main/docs/experiments
while [ ! -f /work/$T/base-style.loss.json ]; do sleep 15; done
X=/work/${T}x; mkdir -p $X
cp $HERE/cotrain/export_cotrain.py /work/previous-manifest.json $X/
ln -sfn /work/$T/sd $X/sd; ln -sfn /work/vgg800/vgg19.pth $X/vgg19.pth; cp /work/$T/seconds.json $X/
python - "$T" <<'PY'
import json, sys
t = sys.argv[1]
sec = json.load(open(f"/work/{t}/seconds.json"))
steps = {"seed": 0, "base_style_steps": 12500, "branch_steps": 0, "base_style_content_hold": 0.0, "base_style_source": "texture",
         "base_style_shape_weight": sec["base_style_shape_weight"], "base_style_shape_margin": 0.0,
         "base_style_shape_weighting": sec["base_style_shape_weighting"], "anchored_hatching_periods": [[0, 7.5], [10500, 6.5]],
         "note": "run as the 7.5-px stage to 10500 (shape weight 2, per pixel) and its checkpoint continued with the 6.5-px hatching and the shape weighting above"}
json.dump(steps, open(f"/work/{t}x/steps.json", "w"))
PY
(cd $X && python export_cotrain.py $X $X/bundle /work/$T/branch-init.safetensors > $X/export.log 2>&1)
echo "exported $T $(date)" >> /work/g-queue.log
cd $HERE/cotrain-levels
bash ../cotrain-hold/ev.sh $X/bundle /work/$T-s1.json --style-scale 1.0 --threads 1 > /work/$T-ev.log 2>&1
echo "ev s1 $T $(date)" >> /work/g-queue.log
if [ "${MORE:-0}" = 1 ]; then
  bash ../cotrain-hold/ev.sh $X/bundle /work/$T-s23.json --style-scale 1.0 --threads 1 --seed 2 > /work/$T-ev23.log 2>&1
  bash ../cotrain-hold/ev.sh $X/bundle /work/$T-s45.json --style-scale 1.0 --threads 1 --seed 4 > /work/$T-ev45.log 2>&1
  echo "ev more $T $(date)" >> /work/g-queue.log
fi
