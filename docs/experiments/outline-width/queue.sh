#!/bin/bash
T=$1
while [ ! -f /work/$T/base-style.loss.json ]; do sleep 10; done
X=/work/${T}x; cp /work/$T/seconds.json $X/
(cd $X && python export_cotrain.py $X $X/bundle /work/$T/branch-init.safetensors > $X/export.log 2>&1)
echo "exported $T $(date)" >> /work/o-queue.log
cd /work/main/docs/experiments/cotrain-levels
bash ../cotrain-hold/ev.sh $X/bundle /work/$T-s1.json --style-scale 1.0 --threads 2 > /work/$T-ev.log 2>&1
echo "ev s1 $T $(date)" >> /work/o-queue.log
