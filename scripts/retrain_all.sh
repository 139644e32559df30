#!/usr/bin/env bash
# Retrain the shipped bundles from scratch and score each result beside the shipped weights with the
# bundle's own evaluate.json (issue 15). One command per bundle:
#
#   scripts/retrain_all.sh mri_sr_selfsupervised   # body (4000 steps) + heads for x2, 3, 5, 6, 7, 8
#   scripts/retrain_all.sh mri_sr_unet             # 11,000 steps, then a 6,000-step shaped fine-tune with real scans
#   scripts/retrain_all.sh mri_denoise_dncnn       # stages 1-3 (train.json) + domain-randomised 4a, 4b
#   scripts/retrain_all.sh                         # all three, shortest first
#
# Run from the repository root. Data: $MONAI_SR_DATA (`make data`); the denoiser's tissue maps from
# $MONAI_SR_TISSUE_MAPS (default: the data folder, where `monai-sr data fetch` puts them). Python:
# $PYTHON (default .venv/bin/python). Everything goes to runs/retrain/<bundle>/ (logs, checkpoints,
# weights, eval/ and eval_shipped/ with MONAI's metric CSVs); the shipped weights are only read.
# A stage whose result is already there is skipped, so a stopped run is continued by running the
# same command again (a stage stopped midway starts that stage again, or resumes where its script can).
# One torch thread per process (OMP_NUM_THREADS=1), as on the shared machine the recipes ran on.
set -euo pipefail

PY=${PYTHON:-.venv/bin/python}
RUNS=${RETRAIN_DIR:-runs/retrain}
SR_SHAPING="--shaping 1.0 --shaping-sigma 3.0"  # mri_sr_unet's stage 2 since 0.4.0 (docs/training.md)
# stage 2's training files since 0.5.0: the two templates (drawn by crop positions) and three real scans
# with fixed shares of the draws
SR_FILES="mni152_2009a_t1_1mm.nii.gz pydeface_mean_head_t1.nii.gz pycortex_S1_T1.nii.gz:0.3
    pydicomdata_MR2_UNCR_shoulder_T1SE_2D.nii.gz:0.1 pydicomdata_MR-SIEMENS_abdomen_T1vibe_2D.nii.gz:0.1"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

log() { echo "$(date -u '+%F %T') retrain: $*"; }

# run_until LOGFILE PATTERN CMD...: run CMD until LOGFILE has a line matching PATTERN, then stop it.
# Reproduces a recorded run that was stopped by hand: the schedule of the planned length, cut after
# the step at which it was stopped (what the stage keeps, best.pt, is written before that line).
run_until() {
    local logfile=$1 pattern=$2
    shift 2
    "$@" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [[ -f $logfile ]] && grep -q -- "$pattern" "$logfile"; then
            kill "$pid"
            wait "$pid" || true
            log "stopped after: $(grep -- "$pattern" "$logfile" | tail -1)"
            return 0
        fi
        sleep 5
    done
    wait "$pid"
}

# evaluate BUNDLE CKPT OUTDIR: the bundle's evaluate.json on CKPT (metric CSVs in OUTDIR).
evaluate() {
    local bundle=$1 ckpt=$2 outdir=$3
    [[ -f $outdir/metrics.csv ]] && return 0
    "$PY" -m monai.bundle run --config_file "bundles/$bundle/configs/evaluate.json" \
        --logging_file "bundles/$bundle/configs/logging.conf" --bundle_root "bundles/$bundle" \
        --ckpt_path "$ckpt" --output_dir "$outdir" --num_threads 1 > "$outdir.log" 2>&1
    log "$bundle $ckpt: $(tr '\n' ' ' < "$outdir/metrics.csv")"
}

evaluate_both() {
    local bundle=$1 ckpt=$2 out=$RUNS/$1
    evaluate "$bundle" "$ckpt" "$out/eval"
    evaluate "$bundle" "bundles/$bundle/models/model.pt" "$out/eval_shipped"
}

retrain_mri_sr_selfsupervised() {
    local out=$RUNS/mri_sr_selfsupervised
    mkdir -p "$out"
    if [[ ! -f $out/model.pt ]]; then
        log "mri_sr_selfsupervised: body, 4000 steps"
        "$PY" scripts/pretrain_through_plane.py --out "$out" --steps 4000 --threads 1 --resume \
            --export "$out/model.pt" > "$out/pretrain.out" 2>&1
    fi
    if [[ ! -f $out/heads.pt ]]; then
        log "mri_sr_selfsupervised: heads x2 3 5 6 7 8 on the new body, 400 steps each"
        "$PY" scripts/train_through_plane_heads.py --weights "$out/model.pt" --factors 2 3 5 6 7 8 --steps 400 \
            --threads 1 --out "$out/heads.pt" > "$out/heads.log" 2>&1
    fi
    evaluate_both mri_sr_selfsupervised "$out/model.pt"
}

retrain_mri_sr_unet() {
    local out=$RUNS/mri_sr_unet
    mkdir -p "$out"
    if [[ ! -f $out/base.pt ]]; then
        log "mri_sr_unet: stage 1, 11,000 steps (models/model_0.3.pt)"
        "$PY" scripts/train_sr_unet.py --out "$out" --steps 11000 --batch-size 16 --patch 96 --lr 1e-3 --seed 0 \
            --val-every 1000 --ckpt-every 500 --log-every 100 --threads 1 --resume --export "$out/base.pt" \
            >> "$out/nohup.out" 2>&1
    fi
    if [[ ! -f $out/model.pt ]]; then
        log "mri_sr_unet: stage 2, 6,000 steps fine-tuned on templates + real scans with spectral shaping behind data consistency (models/model.pt)"
        # shellcheck disable=SC2086  # SR_SHAPING and SR_FILES are word lists
        "$PY" scripts/train_sr_unet.py --out "$out/shaped" --steps 6000 --batch-size 16 --patch 96 --lr 3e-4 \
            --warmup 100 --seed 0 --init "$out/base.pt" $SR_SHAPING --train-files $SR_FILES --dc-loss 0.1 --val-every 1000 --ckpt-every 500 \
            --log-every 200 --threads 1 --resume --export "$out/model.pt" >> "$out/nohup_shaped.out" 2>&1
    fi
    evaluate_both mri_sr_unet "$out/model.pt"
}

retrain_mri_denoise_dncnn() {
    local out=$RUNS/mri_denoise_dncnn train=bundles/mri_denoise_dncnn/configs/train.json
    local maps=${MONAI_SR_TISSUE_MAPS:-$("$PY" -c 'from monai_sr.training.datasets import shared_data_dir; print(shared_data_dir())')}
    local common=(--config_file "$train" --logging_file bundles/mri_denoise_dncnn/configs/logging.conf --num_threads 1)
    mkdir -p "$out"
    # stage 1: no gain/zoom augmentation, patches 32 then 48, lr 1e-3 on a 16-epoch cosine, kept at epoch 9
    if [[ ! -f $out/stage1/checkpoint_epoch=9.pt ]]; then
        log "mri_denoise_dncnn: stage 1 (9 of 16 epochs x 150 steps)"
        "$PY" -m monai.bundle run "${common[@]}" --output_dir "$out/stage1" --learning_rate 0.001 --max_epochs 9 \
            --lr_scheduler#T_max 2400 --patch_schedule "{'0': 32, '8': 48}" \
            --train#make_pair#gain_range "[1.0, 1.0]" --train#make_pair#zoom_prob 0.0 > "$out/stage1.log" 2>&1
    fi
    # stage 2: the committed train.json defaults (gain + zoom augmentation, patch 48, lr 5e-4, 10 x 150 steps)
    if [[ ! -f $out/stage2/final.pt ]]; then
        log "mri_denoise_dncnn: stage 2 (10 x 150 steps)"
        "$PY" -m monai.bundle run "${common[@]}" --output_dir "$out/stage2" \
            --pretrained "$out/stage1/checkpoint_epoch=9.pt" > "$out/stage2.log" 2>&1
    fi
    # stage 3: patch 64, lr 1e-4, 4 x 150 steps, validated every epoch
    if [[ ! -f $out/stage3/final.pt ]]; then
        log "mri_denoise_dncnn: stage 3 (4 x 150 steps)"
        "$PY" -m monai.bundle run "${common[@]}" --output_dir "$out/stage3" --pretrained "$out/stage2/model.pt" \
            --learning_rate 0.0001 --max_epochs 4 --val_interval 1 --patch_schedule "{'0': 64}" > "$out/stage3.log" 2>&1
    fi
    # stage 4a: domain-randomised, lr 3e-4 on a 5000-step schedule, zoom-out only; stopped after step 750
    if [[ ! -f $out/dr_a/final.pt && ! -f $out/dr_a/stopped ]]; then
        log "mri_denoise_dncnn: stage 4a (750 steps of a 5000-step schedule)"
        run_until "$out/dr_a/train.log" "val step 750:" \
            "$PY" bundles/mri_denoise_dncnn/scripts/train_dr.py --out "$out/dr_a" --init "$out/stage3/model.pt" \
            --steps 5000 --lr 3e-4 --refresh 150 --zoom 0.5 1.0 --bn-recal 0 --threads 1 \
            --tissue-maps "$maps" \
            > "$out/dr_a.out" 2>&1
        touch "$out/dr_a/stopped"
    fi
    # stage 4b: lr 1e-4, zoom in and out, batch-norm re-estimation; stopped after step 1150 (validated up to 1000)
    if [[ ! -f $out/dr_b/final.pt && ! -f $out/dr_b/stopped ]]; then
        log "mri_denoise_dncnn: stage 4b (1000 validated steps of a 1500-step schedule)"
        run_until "$out/dr_b/train.log" "val step 1000:" \
            "$PY" bundles/mri_denoise_dncnn/scripts/train_dr.py --out "$out/dr_b" --init "$out/dr_a/best.pt" \
            --steps 1500 --lr 1e-4 --warmup 20 --refresh 150 --bn-recal 48 --threads 1 \
            --tissue-maps "$maps" \
            > "$out/dr_b.out" 2>&1
        touch "$out/dr_b/stopped"
    fi
    cp "$out/dr_b/best.pt" "$out/model.pt"
    evaluate_both mri_denoise_dncnn "$out/model.pt"
}

bundles=("$@")
[[ ${#bundles[@]} -gt 0 ]] || bundles=(mri_sr_selfsupervised mri_sr_unet mri_denoise_dncnn)
for b in "${bundles[@]}"; do
    case $b in
        mri_sr_selfsupervised | mri_sr_unet | mri_denoise_dncnn) ;;
        *) echo "retrain_all.sh: unknown bundle '$b' (mri_sr_selfsupervised, mri_sr_unet, mri_denoise_dncnn)" >&2; exit 2 ;;
    esac
done
for b in "${bundles[@]}"; do
    start=$(date +%s)
    "retrain_$b"
    log "$b done in $(( $(date +%s) - start )) s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
