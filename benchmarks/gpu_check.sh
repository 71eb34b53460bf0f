#!/usr/bin/env bash
# The GPU checks, in one run on a machine with a CUDA GPU (this project's was lent one H200 through the
# library's device tool; figures in benchmarks/RESULTS.md, "GPU"):
#   - `cnncli train trainer=gpu` in 16-mixed and bf16-mixed with channels_last (LeNet-5, ResNet-18, vit_tiny)
#   - export of a GPU-trained checkpoint (verified), eval on the GPU, predict device=cuda against device=cpu
#   - the speed table of the slides: `cnncli bench device=cuda` for ConvNeXt, Swin and ViT
# Usage, from the repository root:  OUT=somewhere bash benchmarks/gpu_check.sh
# cnncli runs from the checkout (PYTHONPATH); a machine without Hydra gets it from .gpu_site, a folder of
# pure-Python wheels unpacked here with `pip install --no-deps --target .gpu_site hydra-core==1.3.8
# omegaconf==2.3.1 antlr4-python3-runtime==4.9.3`.
set -u
OUT=${OUT:-benchmarks/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/.gpu_site:${PYTHONPATH:-}" PYTHONWARNINGS=ignore
work=$(mktemp -d)
mkdir -p "$work/bin"  # a `cnncli` command on the PATH (timeout runs commands, not shell functions)
printf '#!/usr/bin/env bash\nexec python3 -c "from cnncli.cli import console; console()" "$@"\n' > "$work/bin/cnncli"
chmod +x "$work/bin/cnncli"
export PATH="$work/bin:$PATH"
step() { echo; echo "== $(date +%T) $*"; }
quiet="trainer.enable_progress_bar=false"

{
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, torchvision, lightning; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"
nproc
cnncli params model=lenet5 format=csv > /dev/null || { echo "cnncli does not start here"; exit 1; }

for run in "lenet5_16mixed model=lenet5 trainer.precision=16-mixed" \
           "lenet5_bf16mixed model=lenet5 trainer.precision=bf16-mixed" \
           "resnet18_bf16mixed model=resnet18 trainer.precision=bf16-mixed trainer.max_epochs=8" \
           "vit_tiny_bf16mixed model=vit_tiny trainer.precision=bf16-mixed" \
           "vit_tiny_32 model=vit_tiny"; do
  set -- $run
  name=$1; shift
  step "train $name: $*"
  start=$(date +%s%N)
  timeout 240 cnncli train trainer=gpu channels_last=true "$@" $quiet hydra.run.dir="$work/$name" | tail -12
  echo "wall seconds: $(( ($(date +%s%N) - start) / 1000000000 ))"
  cp "$work/$name/summary.json" "$OUT/train_$name.json" 2>/dev/null
done

ckpt="$work/resnet18_bf16mixed/checkpoints/best.ckpt"
step "eval on the GPU (accelerator auto)"
timeout 120 cnncli eval ckpt_path="$ckpt" out="$work/eval" | tail -8
step "export onnx and torchscript, verified"
timeout 180 cnncli export ckpt_path="$ckpt" format=onnx out="$work/model.onnx" | tail -6
timeout 180 cnncli export ckpt_path="$ckpt" format=torchscript out="$work/model.ts" | tail -6
step "predict device=cuda vs device=cpu"
python3 - "$work/pngs" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
from sklearn.datasets import load_digits
folder = Path(sys.argv[1]); folder.mkdir()
digits = load_digits()
for i in range(64):
    Image.fromarray((digits.images[i] * 255 / 16).astype("uint8")).resize((32, 32)).save(folder / f"{i}_{digits.target[i]}.png")
EOF
timeout 120 cnncli predict ckpt_path="$ckpt" inputs="[$work/pngs]" top_k=1 device=cuda output="$OUT/predict_cuda.csv" > /dev/null
timeout 120 cnncli predict ckpt_path="$ckpt" inputs="[$work/pngs]" top_k=1 device=cpu output="$OUT/predict_cpu.csv" > /dev/null
timeout 120 cnncli predict model_file="$work/model.onnx" inputs="[$work/pngs]" top_k=1 output="$OUT/predict_onnx.csv" > /dev/null
python3 - "$OUT" <<'EOF'
import csv, sys
from pathlib import Path
read = lambda name: {r["path"]: r for r in csv.DictReader(open(Path(sys.argv[1]) / name))}
cuda, cpu, onnx = read("predict_cuda.csv"), read("predict_cpu.csv"), read("predict_onnx.csv")
for other, label in ((cpu, "cpu"), (onnx, "onnx")):
    same = sum(cuda[p]["class"] == other[p]["class"] for p in cuda)
    diff = max(abs(float(cuda[p]["probability"]) - float(other[p]["probability"])) for p in cuda)
    print(f"predict cuda vs {label}: top-1 equal on {same} of {len(cuda)} images, max probability difference {diff:.2e}")
right = sum(Path(p).stem.split("_")[1] == r["class"] for p, r in cuda.items())
print(f"predict cuda: {right} of {len(cuda)} digits right")
EOF

models=convnext_tiny,swin_t,convnext_small,swin_s,convnext_base,swin_b,vit_b_16,vit_b_32
step "bench, the ConvNeXt paper's setting: tf32, channels_last, batch 64"
timeout 300 cnncli bench model=$models device=cuda precision=tf32 channels_last=true train=true format=json > "$OUT/bench_tf32_cl.json"
python3 -c "
import json, sys
for m in json.load(open('$OUT/bench_tf32_cl.json'))['models']:
    print(m['model'], round(m['inference']['images_per_second'], 1), round(m['train']['images_per_second'], 1), (m['paper'] or {}).get('images_per_second'))"
step "bench bf16-mixed, channels_last"
timeout 300 cnncli bench model=$models device=cuda precision=bf16-mixed channels_last=true format=markdown | tee "$OUT/bench_bf16_cl.md"
step "bench float32 (no TF32), contiguous"
timeout 300 cnncli bench model=$models device=cuda precision=32 format=markdown | tee "$OUT/bench_fp32.md"
step "done"
} 2>&1 | tee "$OUT/gpu_check.log"
