#!/bin/bash
# Watch one co-training stage (../gpu-cotrain/stage.py WORK STEPS SEED, started separately) and, for each step in
# SNAPS, copy its checkpoint once the log has passed step+50 (before the next save), then pack, export and eval
# each copy in order (336 pairs, style scale 1) into /work/TAG-STEP-s1.json.
# usage: SHAPE_WEIGHT=w bash queue.sh TAG WORK SEED STEPS SNAP...
TAG=$1; L=$2; SEED=$3; STEPS=$4; shift 4; SNAPS="$@"
HERE=/work/main/docs/experiments
LOG=/work/$TAG-queue.log
snap() {
  for st in $SNAPS; do
    while ! grep -q "step $((st+50))/$STEPS" $L/train.log; do sleep 10; done
    S=/work/$TAG-$st; mkdir -p $S
    cp $L/base-style.ckpt $S/ && cp -r /work/ship/sd $S/ && cp $L/seconds.json $S/ && touch $S/.copied
    echo "snap $st $(date)" >> $LOG
  done
}
snap &
for st in $SNAPS; do
  S=/work/$TAG-$st
  while [ ! -f $S/.copied ]; do sleep 10; done
  (cd $HERE/gpu-cotrain && python pack_checkpoint.py $S >> $LOG 2>&1)
  X=/work/$TAG-${st}x; mkdir -p $X
  cp $HERE/cotrain/export_cotrain.py /work/previous-manifest.json $X/
  ln -sfn $S/sd $X/sd; ln -sfn /work/vgg800/vgg19.pth $X/vgg19.pth; cp $S/seconds.json $X/
  echo "{\"seed\": $SEED, \"base_style_steps\": $st, \"branch_steps\": 0, \"base_style_content_hold\": 0.0, \"base_style_source\": \"texture\", \"base_style_shape_weight\": ${SHAPE_WEIGHT:-1}.0, \"base_style_shape_margin\": 0.0}" > $X/steps.json
  (cd $X && python export_cotrain.py $X $X/bundle $S/branch-init.safetensors > $X/export.log 2>&1)
  rm -f $S/base-style.ckpt  # packed; the checkpoint is 3x the model
  (cd $HERE/cotrain-levels && bash ../cotrain-hold/ev.sh $X/bundle /work/$TAG-$st-s1.json --style-scale 1.0 --threads 1 > /work/$TAG-$st-ev.log 2>&1)
  echo "ev $st $(date)" >> $LOG
done
wait
echo alldone >> $LOG
