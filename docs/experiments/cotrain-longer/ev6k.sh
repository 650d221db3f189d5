#!/bin/bash
# pack, export, eval the long run's step-6000 checkpoint
SEED=$1; ST=6000; S=/work/long8k$SEED-s$ST; TAG=long$SEED-$ST
while [ ! -f /work/long8k$SEED-$ST.ckpt ]; do sleep 10; done
sleep 5
mkdir -p $S && cp /work/long8k$SEED-$ST.ckpt $S/base-style.ckpt && cp -r /work/ship/sd $S/ && cp /work/long8k$SEED/seconds.json $S/
cd /work/main/docs/experiments/gpu-cotrain && python pack_checkpoint.py $S > /work/$TAG-pack.log 2>&1
X=/work/${TAG}x; mkdir -p $X
cp /work/ftextplainx/{export_cotrain.py,previous-manifest.json} $X/
ln -sfn $S/sd $X/sd; ln -sfn /work/vgg800/vgg19.pth $X/vgg19.pth; cp $S/seconds.json $X/
echo "{\"seed\": $SEED, \"base_style_steps\": $ST, \"branch_steps\": 0, \"base_style_content_hold\": 0.0, \"base_style_source\": \"texture\", \"base_style_shape_weight\": 1.0, \"base_style_shape_margin\": 0.0}" > $X/steps.json
(cd $X && python export_cotrain.py $X $X/bundle $S/branch-init.safetensors > $X/export.log 2>&1)
(cd /work/main/docs/experiments/cotrain-levels && bash ../cotrain-hold/ev.sh $X/bundle /work/$TAG-s1.json --style-scale 1.0 --threads 1 > /work/$TAG-ev.log 2>&1)
echo "ev $TAG $(date)" >> /work/ev6k$SEED.log
