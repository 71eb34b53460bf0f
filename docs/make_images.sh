#!/usr/bin/env bash
# Regenerates the README's pictures in docs/images/ from scratch runs (about 12 minutes on 2 CPU cores).
# Run from the repository root with cnncli installed: bash docs/make_images.sh
set -euo pipefail
images=docs/images
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$images"
quiet=trainer.enable_progress_bar=false

# LeNet-5 on digits as in the quick start, with a shorter patience so that early stopping shows in
# curves.png; the confusion matrix and the worst errors of its best checkpoint (test=false: eval tests it)
cnncli train hydra.run.dir="$work/lenet" callbacks.early_stopping.patience=3 test=false $quiet
cnncli eval ckpt_path="$work/lenet/checkpoints/best.ckpt" errors=16 out="$work/lenet"

# the first '3' of the digits test split as a PNG file
python - "$work/three.png" <<'PY'
import sys
from PIL import Image
from cnncli.data.digits import DigitsDataModule
data = DigitsDataModule(name="digits", channels=1, image_size=32, num_classes=10, class_names=list("0123456789"))
data.setup()
split = data.splits["test"]
Image.fromarray(split.images[int((split.labels == 3).nonzero()[0, 0])][0].numpy()).save(sys.argv[1])
PY

# every viz mode on LeNet-5 (a black patch: the digits' background), CAM on a ResNet-20
ckpt="$work/lenet/checkpoints/best.ckpt"
cnncli viz -m mode=featuremaps,filters,cam,occlusion,deconv,guided,guided_gradcam ckpt_path="$ckpt" image="$work/three.png" out="$work/viz" occlusion.fill=0
cnncli viz -m mode=deconv,guided layer=0 top_k=6 ckpt_path="$ckpt" image="$work/three.png" out="$work/viz"
cnncli train hydra.run.dir="$work/resnet20" model=resnet20 trainer.max_epochs=3 $quiet
cnncli viz cam ckpt_path="$work/resnet20/checkpoints/best.ckpt" image="$work/three.png" out="$work/viz_resnet20"

# vit_tiny with its recipe (about 5 minutes here), and its attention rollout on the same '3'
cnncli train hydra.run.dir="$work/vit" model=vit_tiny $quiet
cnncli viz attention ckpt_path="$work/vit/checkpoints/best.ckpt" image="$work/three.png" out="$work/viz_vit"

# the learning-rate range test of the quick start's LeNet-5
cnncli lr-find hydra.run.dir="$work/lr_find"

# a learning-rate sweep, compared
cnncli train -m optimizer.lr=1e-4,1e-3,1e-2 trainer.max_epochs=12 hydra.sweep.dir="$work/sweep" $quiet
cnncli compare "$work/sweep" out="$work/compare.png"

cp "$work/lenet/curves.png" "$work/lenet/confusion_matrix.png" "$work/lenet/errors.png" "$work/compare.png" "$images/"
cp "$work/viz/featuremaps_three_0.png" "$images/featuremaps_lenet5_C1.png"
cp "$work/viz/featuremaps_three_3.png" "$images/featuremaps_lenet5_C3.png"
cp "$work/viz/filters_0.png" "$images/filters_lenet5_C1.png"
cp "$work/viz/filters_3_maximized.png" "$images/filters_lenet5_C3_maximized.png"
cp "$work"/viz/cam_three_layer5_class*.png "$images/gradcam_lenet5.png"  # viz names carry layer and class
cp "$work"/viz_resnet20/cam_three_layerlayers_class*.png "$images/cam_resnet20.png"
cp "$work"/viz/occlusion_three_class*_fill0.png "$images/occlusion_lenet5.png"
cp "$work/viz/deconv_three_3_top9.png" "$images/deconv_lenet5_C3.png"
cp "$work/viz/guided_three_3_top9.png" "$images/guided_lenet5_C3.png"
cp "$work/viz/deconv_three_0_top6.png" "$images/deconv_lenet5_C1.png"
cp "$work"/viz/guided_gradcam_three_layer5_class*.png "$images/guided_gradcam_lenet5.png"
cp "$work/viz_vit/attention_three.png" "$images/attention_vit_tiny.png"
cp "$work/viz_vit/attention_three_blocks.png" "$images/attention_vit_tiny_blocks.png"
cp "$work/lr_find/lr_find.png" "$images/lr_find_lenet5.png"
ls -l "$images"
