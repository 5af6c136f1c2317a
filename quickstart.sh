#!/usr/bin/env bash
# The README's first command: set up, then the whole main job on real Fashion-MNIST on the CPU:
# IMP with rewinding (conv4, 4 networks of 3 epochs), then Lottery Pools over the tickets it made,
# ending with the table of tickets against pooled tickets. RUN=<folder> sets the runs folder.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
RUN=${RUN:-runs/quickstart_fashionmnist_conv4}
mkdir -p "$RUN"
cd CIFAR
RESUME=""
if [ -f "../$RUN/0checkpoint.pth.tar" ]; then RESUME="--resume"; fi
../.venv/bin/python -u main_imp.py --data ../data --dataset fashionmnist --arch conv4 --seed 41 \
    --prune_type rewind_lt --rewind_epoch 1 --pruning_times 4 --epochs 3 --decreasing_lr 2 \
    --save_dir "../$RUN" $RESUME
../.venv/bin/python -u Lottery_pools.py --interpolate_method Lottery_pools --search_num 4 --bn_batches 20 \
    --arch conv4 --data ../data --dataset fashionmnist --seed 41 --inference --checkpoint "../$RUN"
echo "quickstart: tickets, results (pools_results.json/.csv) and plots are in $RUN"
