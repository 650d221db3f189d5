#!/bin/bash
# D1 (running) -> export+eval D1 -> D2 train -> export+eval D2
ev() { T=$1; X=/work/${T}x; cp /work/$T/seconds.json $X/
  (cd $X && python export_cotrain.py $X $X/bundle /work/$T/branch-init.safetensors > $X/export.log 2>&1)
  echo "exported $T $(date)" >> /work/d-queue.log
  cd /work/main/docs/experiments/cotrain-levels
  bash ../cotrain-hold/ev.sh $X/bundle /work/$T-s1.json --style-scale 1.0 --threads 2 > /work/$T-ev.log 2>&1
  echo "ev s1 $T $(date)" >> /work/d-queue.log; }
while [ ! -f /work/D1/base-style.loss.json ]; do sleep 10; done
ev D1
cd /work/main/docs/experiments/outline-width
OUTLINE=2.5 HATCH_PERIOD=6.5 SHAPE_WEIGHT=2 LR_DECAY_STEPS=2000 DEVICE=cpu PREFETCH=0 THREADS=2 python outline_stage.py /work/D2 12500 0 > /work/D2/train.log 2>&1
echo "trained D2 $(date)" >> /work/d-queue.log
ev D2
