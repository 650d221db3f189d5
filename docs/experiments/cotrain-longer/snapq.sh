#!/bin/bash
# snapshot long$SEED's checkpoint at steps 3000/3500/4000 (copied once the log has passed step+50, i.e. before
# the next save at step+250), then pack/export/eval each snapshot and the final 4500-step result, in order.
SEED=$1
L=/work/long$SEED
for st in 3000 3500 4000; do
  nxt=$((st+50))
  while ! grep -q "step $nxt/4500" $L/train.log; do sleep 10; done
  S=/work/long$SEED-$st; mkdir -p $S
  cp $L/base-style.ckpt $S/ && cp -r /work/ship/sd $S/ && cp $L/seconds.json $S/
  echo "snap $st $(date)" >> /work/snapq$SEED.log
done
cd /work/main/docs/experiments/gpu-cotrain
for st in 3000 3500 4000; do
  S=/work/long$SEED-$st
  python pack_checkpoint.py $S >> /work/snapq$SEED.log 2>&1
done
ev() {  # WORK BRANCH TAG STEPS
  X=/work/$3x; mkdir -p $X
  cp /work/ftextplainx/{export_cotrain.py,previous-manifest.json} $X/
  ln -sfn $1/sd $X/sd; ln -sfn /work/vgg800/vgg19.pth $X/vgg19.pth; cp $1/seconds.json $X/
  echo "{\"seed\": $SEED, \"base_style_steps\": $4, \"branch_steps\": 0, \"base_style_content_hold\": 0.0, \"base_style_source\": \"texture\", \"base_style_shape_weight\": 1.0, \"base_style_shape_margin\": 0.0}" > $X/steps.json
  (cd $X && python export_cotrain.py $X $X/bundle $2 > $X/export.log 2>&1)
  (cd /work/main/docs/experiments/cotrain-levels && bash ../cotrain-hold/ev.sh $X/bundle /work/$3-s1.json --style-scale 1.0 --threads 1 > /work/$3-ev.log 2>&1)
  echo "ev $3 $(date)" >> /work/snapq$SEED.log
}
for st in 3000 3500 4000; do ev /work/long$SEED-$st /work/long$SEED-$st/branch-init.safetensors long$SEED-$st $st; done
while [ ! -f $L/base-style.loss.json ] || pgrep -f "stage.py $L " > /dev/null; do sleep 10; done
sleep 3
ev $L $L/branch-init.safetensors long$SEED-4500 4500
echo alldone >> /work/snapq$SEED.log
