#!/usr/bin/env bash
# GPU checks of the reliability work (issue 7), ~5 minutes on one GPU: a real CUDA out-of-memory,
# fp16 skipped steps, a NaN loss on the device, kill + resume on the GPU, and the reliability tests
# on 2 CPU cores of a quiet machine. Run from the repository root: bash benchmarks/gpu_reliability_check.sh
OUT=${OUT:-/tmp}
exec > >(tee "$OUT/reliability_check.log") 2>&1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))"
T=/tmp/chk; mkdir -p $T
cat > $T/tiny.toml <<R
name = "tiny"
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "digits"
batch_size = 64
[train]
epochs = 3
[output]
dir = "$T/runs"
plots = false
R
echo "== 1. real CUDA OOM"
timeout 120 python3 -m vitkit run $T/tiny.toml --set 'model={name="vit",img_size=224,patch_size=4,embed_dim=768,depth=12,num_heads=12}' --set data.batch_size=1024 2>&1 | tail -2; echo "rc=${PIPESTATUS[0]}"
echo "== 2. fp16 run: skipped steps counted"
timeout 120 python3 -m vitkit run $T/tiny.toml --set train.precision=\"fp16\" --set name=\"fp16\" >/dev/null 2>$T/err; echo rc=$?; cat $T/err
python3 -c "import json,glob; s=json.load(open(glob.glob('$T/runs/fp16/*/summary.json')[0])); print({k: s[k] for k in ('test_acc','skipped_steps','precision','device')})"
echo "== 3. NaN on GPU (lr 1e6)"
timeout 120 python3 -m vitkit run $T/tiny.toml --set optimizer.lr=1e6 --set name=\"nan\" >/dev/null 2>$T/err; echo rc=$?; cat $T/err
echo "== 4. kill + resume test on the GPU"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_resume.py --durations=3 2>&1 | tail -15
echo "== 5. my tests on 2 CPU cores, no GPU (quiet-machine timings)"
CUDA_VISIBLE_DEVICES= timeout 300 taskset -c 0,1 python3 -m pytest -q -p no:cacheprovider tests/test_corpus.py tests/test_faults.py tests/test_bad_images.py tests/test_resume.py --durations=12 2>&1 | tail -25
