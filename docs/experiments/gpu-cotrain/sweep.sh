#!/usr/bin/env bash
# Co-training stages side by side on one GPU (stage.py), each from a fresh copy of CARRY's sd/ and vgg19.pth;
# at DEADLINE seconds the unfinished ones are stopped and packed from their last checkpoint (pack_checkpoint.py).
# Each run is packed as OUT/NAME.tar (the stage's
# EMA UNet, its branch, seconds.json, the loss log); every run's log tail goes to OUT/sweep.log.
# usage: sweep.sh CARRY OUT DEADLINE   (runs as NAME:STEPS:SEED:ENV=VAL,ENV=VAL in RUNS)
set -u
carry=$1 out=$2 deadline=$3
here=$(cd "$(dirname "$0")" && pwd)
root=${SWEEP_ROOT:-/tmp/sweep}
pids=()
for run in $RUNS; do
    IFS=: read -r name steps seed settings <<< "$run"
    work=$root/$name
    mkdir -p "$work" && cp -r "$carry/sd" "$work/" && cp "$carry/vgg19.pth" "$work/"
    (cd "$here" && exec env THREADS=1 DEVICE=${SWEEP_DEVICE:-cuda} ${settings//,/ } python3 stage.py "$work" "$steps" "$seed" > "$work/train.log" 2>&1) &
    pids+=($!)
done
end=$((SECONDS + deadline))
while [ $SECONDS -lt $end ] && jobs -r | grep -q .; do sleep 5; done
for pid in "${pids[@]}"; do kill -- "$pid" 2>/dev/null; done
pkill -f "stage.py $root" 2>/dev/null
sleep 2
for run in $RUNS; do
    IFS=: read -r name steps seed settings <<< "$run"
    work=$root/$name
    { echo "== $name ($steps steps, seed $seed, $settings)"; tail -n 3 "$work/train.log"; } >> "$out/sweep.log"
    if [ ! -f "$work/base-style.loss.json" ] && [ -f "$work/base-style.ckpt" ]; then  # stopped: its last checkpoint
        (cd "$here" && python3 pack_checkpoint.py "$work" >> "$work/train.log" 2>&1)
        tail -n 1 "$work/train.log" >> "$out/sweep.log"
    fi
    if [ -f "$work/base-style.loss.json" ]; then
        tar -C "$work" -cf "$out/$name.tar" sd/unet branch-init.safetensors seconds.json base-style.loss.json
    fi
done
