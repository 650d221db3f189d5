#!/bin/bash
SEED=$1; L=/work/cont$SEED; TAG=long$SEED-5000
while [ ! -f $L/base-style.loss.json ] || pgrep -f "stage.py $L " > /dev/null; do sleep 10; done
sleep 3
X=/work/${TAG}x; mkdir -p $X
cp /work/ftextplainx/{export_cotrain.py,previous-manifest.json} $X/
ln -sfn $L/sd $X/sd; ln -sfn /work/vgg800/vgg19.pth $X/vgg19.pth; cp $L/seconds.json $X/
echo "{\"seed\": $SEED, \"base_style_steps\": 5000, \"branch_steps\": 0, \"base_style_content_hold\": 0.0, \"base_style_source\": \"texture\", \"base_style_shape_weight\": 1.0, \"base_style_shape_margin\": 0.0}" > $X/steps.json
(cd $X && python export_cotrain.py $X $X/bundle $L/branch-init.safetensors > $X/export.log 2>&1)
(cd /work/main/docs/experiments/cotrain-levels && bash ../cotrain-hold/ev.sh $X/bundle /work/$TAG-s1.json --style-scale 1.0 --threads 1 > /work/$TAG-ev.log 2>&1)
echo "ev $TAG $(date)" >> /work/contq$SEED.log
