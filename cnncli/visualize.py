"""How `cnncli viz` draws what a trained network computes (the command and its options: cnncli/commands/viz.py).

  featuremaps  the activations of a layer for one image (captum LayerActivation); default: every conv,
               up-convolution (U-Net's ConvTranspose2d) and pooling layer in turn, one grid each, titled with
               the layer's name and output shape.
  filters      the first conv layer's kernels as images; and for `layer` (default: the last conv layer) the
               input that maximizes each filter's mean activation, by gradient ascent from a blank or noisy
               image with L2 and total-variation penalties (written here: captum has no feature visualization).
  cam          Grad-CAM (captum LayerGradCam) of `layer` (default: the last feature maps before the classifier)
               for the predicted class or `target`, upsampled and overlaid on the image. When those maps reach
               the classifier only through a global average pool (NiN, GoogLeNet, ResNet), the gradient is the
               same at every position, Grad-CAM's channel weights are the linear head's class weights and the
               map is CAM (Zhou et al. 2016) exactly: it is then titled CAM.
  occlusion    the occlusion sensitivity of Zeiler & Fergus (captum Occlusion): a patch of the training set's
               mean grey slides over the image; each pixel shows the probability of the class with the patch
               over it (averaged over the patch positions that cover it). The map is also saved as .npy.
  deconv       Zeiler & Fergus's deconvnet: the strongest activation of each of the `top_k` most active maps of
               `layer` (default: the last conv layer) projected back to pixels: the gradient of that one unit
               with every ReLU passing back only the positive part of the signal (its forward mask ignored),
               max-pool switches and transposed filters being what autograd does anyway.
  guided       the same units by guided backpropagation (Springenberg et al. 2015): a ReLU passes back the
               positive signal only where its input was positive (deconvnet and gradient rules combined).
  guided_gradcam  Selvaraju et al. 2017: the guided backpropagation of the class score times Grad-CAM's map:
               fine detail (guided) restricted to where the class is (Grad-CAM).
  attention    a vision transformer's attention rollout (Abnar & Zuidema 2020): each block's attention,
               averaged over heads, plus the identity (the residual path), rows renormalized, multiplied
               through the blocks; the class token's row over the patch grid, upsampled and overlaid. A second
               PNG shows each block's own class-token attention.
cam, occlusion and guided_gradcam explain one class score of the whole image: a segmentation checkpoint (a
score map per class) is refused in one line naming the modes that fit it. The deconvnet and guided rules are
ReLU's: a network that computes no ReLU (tanh LeNet-5s, GELU ConvNeXt and transformers) is refused likewise;
the rules are applied to every ReLU it computes, as nn.ReLU modules or F.relu calls (ResNet-20's).

The image is read and converted (channels, size, the run's normalization) exactly as `cnncli predict` does.
Each file's name carries what decides its picture, so that no output replaces another: the mode, the
image, the layer, the class and the options set away from conf/viz.yaml's defaults, e.g.
cam_three_layer5_class3.png, filters_3_maximized_steps30.png, occlusion_three_class3_patch10_stride2.png.
"""

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerActivation, LayerAttribution, LayerGradCam, Occlusion
from matplotlib.patches import Rectangle
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.overrides import TorchFunctionMode
from torchvision.models import SwinTransformer, VisionTransformer
from torchvision.transforms import v2

from cnncli import config_dir
from cnncli.commands.predict import CheckpointModel
from cnncli.data import images
from cnncli.errors import ConfigError, UserError, check_choice, check_output_folder
from cnncli.models.lenet import SparseConv2d, Subsampling
from cnncli.plots import plot_image_grid, plt
from cnncli.runs import run_folder

CONV = (nn.Conv2d, nn.ConvTranspose2d, SparseConv2d)  # ConvTranspose2d: U-Net's up-convolutions
POOL = (nn.MaxPool2d, nn.AvgPool2d, Subsampling)
# pools that only fit the maps to the classifier's input size; not the maps a CAM should weight
ADAPTIVE_POOL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
NO_FEATURE_MAPS = {
    "featuremaps": "featuremaps draws the 2-D maps that conv and pooling layers compute",
    "cam": "CAM and Grad-CAM weight the feature maps of a conv layer",
    "filters": "filters draws the kernels of conv layers",
    "deconv": "deconv projects units of a conv layer's feature maps back to the pixels",
    "guided": "guided projects units of a conv layer's feature maps back to the pixels",
    "guided_gradcam": "guided Grad-CAM weights the feature maps of a conv layer",
}


CLASS_SCORE_MODES = ("cam", "occlusion", "guided_gradcam")  # they need one score per class for the image
RELU_MODES = ("deconv", "guided", "guided_gradcam")


def visualize(cfg: DictConfig) -> list[Path]:
    """The PNGs of cfg.mode (cfg checked by cnncli/commands/viz.py); their paths, printed."""
    net = CheckpointModel(cfg.ckpt_path, cfg.trust_model_code)
    if net.task == "segmentation" and cfg.mode in CLASS_SCORE_MODES:
        raise UserError(
            f"viz {cfg.mode} explains a classifier's score of one class for the whole image; {cfg.ckpt_path} is a "
            f"segmentation network (a score per pixel): the modes that fit it: {', '.join(fitting_modes(net))}"
        )
    out = Path(cfg.out) if cfg.out else run_folder(Path(cfg.ckpt_path)) / "viz"
    check_output_folder("out", out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    existing = set(out.iterdir())
    try:
        if cfg.mode == "filters":
            written = filters(cfg, net, out)
        else:
            x, picture = load_image(cfg.image, net)
            written = DRAW[cfg.mode](cfg, net, x, picture, out / f"{cfg.mode}_{name_part(Path(cfg.image).stem)}")
    except UserError:  # a mode that refuses the network or the image leaves no folder of its own behind
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    for path in written:
        # the same name means the same mode, image and options: a file replaced is said so, never silently
        print(f"{path} (replaced the earlier one)" if path in existing else path)
    return written


def name_part(value) -> str:
    """A layer, class or option value as part of a file name: letters, digits, '.', '-' and '_' kept."""
    return re.sub(r"[^\w.-]+", "-", str(value)).strip("-") or "_"


def changed_options(cfg: DictConfig, group: str) -> str:
    """`_key<value>` for each option of `group` set away from conf/viz.yaml's default, e.g. `_steps30_tv0`."""
    defaults = OmegaConf.load(config_dir() / "viz.yaml")[group]
    return "".join(f"_{key}{name_part(value)}" for key, value in cfg[group].items() if value != defaults.get(key))


def truncated(count: int, total: int) -> str:
    """`_first<N>` when max_maps leaves maps or filters out: a smaller grid never takes the full one's name."""
    return f"_first{count}" if count < total else ""


def load_image(path: str, net: CheckpointModel) -> tuple[torch.Tensor, np.ndarray]:
    """The file as the network's input [1, C, S, S], and as a picture in [0, 1] ([S, S] or [S, S, 3])."""
    if not Path(path).is_file():
        raise UserError(f"image not found: {path}")
    pixels = torch.from_numpy(images.read(str(path), net.channels, net.image_size, net.resize))
    return v2.Normalize(net.mean, net.std)(pixels).unsqueeze(0), as_picture(pixels)


def as_picture(pixels: torch.Tensor) -> np.ndarray:
    """[C, H, W] -> what imshow draws: [H, W] for one channel, [H, W, 3] for colour."""
    picture = pixels.detach().permute(1, 2, 0).numpy()
    return picture[..., 0] if picture.shape[-1] == 1 else picture


def feature_map_layers(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Name -> output shape (C, H, W) of every module, layer or block, whose output is a stack of feature maps
    larger than 1x1, in the order the forward pass finishes them."""
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1:
                shapes.pop(name, None)  # a module called twice counts where it finished last
                shapes[name] = tuple(output.shape[1:])

        return hook

    forward_once(
        model, x, [module.register_forward_hook(record(name)) for name, module in model.named_modules() if name]
    )
    return shapes


def forward_once(model: nn.Module, x: torch.Tensor, hooks: list) -> None:
    """One forward pass without gradients for the hooks that record it, removed after however it ends."""
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()


def require_feature_maps(shapes: dict, model: nn.Module, mode: str) -> None:
    if not shapes:
        kinds = ", ".join(dict.fromkeys(type(m).__name__ for m in model.modules() if not list(m.children())))
        raise UserError(
            f"{NO_FEATURE_MAPS[mode]}, and this network has none: it has no conv layer, its layers ({kinds}) "
            "compute flat vectors. `cnncli viz occlusion` works with any network"
        )


def chosen_layer(name, shapes: dict, model: nn.Module) -> str:
    if str(name) not in shapes:
        modules = dict(model.named_modules())
        layers = ", ".join(f"{n} ({type(modules[n]).__name__})" for n in shapes)
        raise ConfigError("layer", f"{str(name)!r} is not a layer with feature maps; the layers are: {layers}")
    return str(name)


def describe(name: str, module: nn.Module, shape: tuple[int, ...]) -> str:
    return f"{name} ({type(module).__name__}): {' x '.join(map(str, shape))}"


def featuremaps(cfg: DictConfig, net: CheckpointModel, x: torch.Tensor, picture, stem: Path) -> list[Path]:
    shapes = feature_map_layers(net.model, x)
    require_feature_maps(shapes, net.model, "featuremaps")
    modules = dict(net.model.named_modules())
    if cfg.layer is not None:
        names = [chosen_layer(cfg.layer, shapes, net.model)]
    else:
        names = [name for name in shapes if isinstance(modules[name], CONV + POOL)] or list(shapes)
    activations = LayerActivation(net.model, [modules[name] for name in names]).attribute(x)
    written = []
    for name, maps in zip(names, activations):
        total, maps = maps.shape[1], maps[0, : cfg.max_maps].numpy()
        path = Path(f"{stem}_{name_part(name)}{truncated(len(maps), total)}.png")
        plot_image_grid(
            list(maps),
            [f"map {i}" for i in range(len(maps))],
            path,
            title=f"{describe(name, modules[name], shapes[name])}   ({Path(cfg.image).name})",
            scale_each=True,
        )
        written.append(path)
    return written


def filters(cfg: DictConfig, net: CheckpointModel, out: Path) -> list[Path]:
    modules = dict(net.model.named_modules())
    convs = [name for name, module in modules.items() if isinstance(module, nn.Conv2d)]
    if not convs:
        require_feature_maps({}, net.model, "filters")
    first_kernels = modules[convs[0]].weight.detach()  # [F, C, k, k]
    kernels = first_kernels[: cfg.max_maps]
    pictures = [k.permute(1, 2, 0).numpy() if k.shape[0] == 3 else k.mean(0).numpy() for k in kernels]
    kernels_png = out / f"filters_{name_part(convs[0])}{truncated(len(kernels), len(first_kernels))}.png"
    plot_image_grid(
        pictures,
        [f"filter {i}" for i in range(len(pictures))],
        kernels_png,
        scale_each=True,
        title=f"{convs[0]}: the first conv layer's {len(first_kernels)} kernels "
        f"({' x '.join(map(str, first_kernels.shape[1:]))})",
    )

    shapes = feature_map_layers(net.model, torch.zeros(1, net.channels, net.image_size, net.image_size))
    last_conv = [n for n in convs if n in shapes][-1]
    name = chosen_layer(cfg.layer, shapes, net.model) if cfg.layer is not None else last_conv
    images, before, after = maximize_activations(net, modules[name], min(shapes[name][0], cfg.max_maps), cfg.ascent)
    print(
        f"{name}: mean activation of its {len(images)} filters {before.mean():.3f} at the start, "
        f"{after.mean():.3f} after {cfg.ascent.steps} steps of gradient ascent"
    )
    options = truncated(len(images), shapes[name][0]) + changed_options(cfg, "ascent")
    maximized_png = out / f"filters_{name_part(name)}_maximized{options}.png"
    plot_image_grid(
        [as_picture(image) for image in images],
        [f"{i}: {a:.2f}" for i, a in enumerate(after)],
        maximized_png,
        scale_each=True,
        title=f"inputs that maximize each filter of {describe(name, modules[name], shapes[name])} "
        "(title: filter: its mean activation)",
    )
    return [kernels_png, maximized_png]


def maximize_activations(net: CheckpointModel, layer: nn.Module, count: int, ascent: DictConfig):
    """One input image per filter (channel) of `layer`, in pixels [0, 1], found by gradient ascent on the
    filter's mean activation minus `l2` x the squared distance from the mean grey and `tv` x the total
    variation (both keep the images smooth and natural-looking). Returns the images and each filter's mean
    activation before and after."""
    torch.manual_seed(ascent.seed)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (net.mean, net.std))
    shape = (count, net.channels, net.image_size, net.image_size)
    pixels = mean.expand(shape).clone()  # blank: the training set's mean grey
    if ascent.start == "noise":
        pixels += 0.1 * torch.randn(shape)
    pixels = pixels.clamp(0, 1).requires_grad_()
    net.model.requires_grad_(False)  # only the images are optimized
    saved = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: saved.update(maps=output))
    optimizer = torch.optim.Adam([pixels], lr=ascent.lr)
    own = torch.arange(count)

    def activations() -> torch.Tensor:
        net.model((pixels - mean) / std)
        return saved["maps"][own, own].mean(dim=(1, 2))  # image i drives filter i

    try:
        with torch.no_grad():
            before = activations()
        for _ in range(ascent.steps):
            optimizer.zero_grad()
            smoothness = (pixels.diff(dim=2).abs().mean() + pixels.diff(dim=3).abs().mean()) * count
            loss = -activations().sum() + ascent.l2 * ((pixels - mean) ** 2).mean() * count + ascent.tv * smoothness
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                pixels.clamp_(0, 1)
        with torch.no_grad():
            after = activations()
    finally:
        handle.remove()
    return pixels.detach(), before, after


def target_class(cfg: DictConfig, net: CheckpointModel, probabilities: torch.Tensor) -> int:
    """The class to explain: `target` (a class name) or the predicted class."""
    if cfg.target is None:
        return int(probabilities.argmax())
    check_choice("target", str(cfg.target), net.class_names)
    return net.class_names.index(str(cfg.target))


def reaches_classifier_by_global_average(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> bool:
    """Whether the class score depends on the layer's maps only through their spatial means (global average
    pooling, then linear layers): then its gradient is the same at every position of a map, and Grad-CAM
    is CAM."""
    saved = {}

    def keep(module, inputs, output):
        saved["maps"] = output
        return output.clone()  # an in-place op downstream (ReLU(inplace=True)) must not change the saved maps

    handle = layer.register_forward_hook(keep)
    try:
        score = model(x)[0, target]
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(score, saved["maps"])
    spread = (gradient - gradient.mean(dim=(2, 3), keepdim=True)).abs().max()
    return bool(spread <= 1e-6 * gradient.abs().max().clamp(min=1e-30))


def default_cam_layer(model: nn.Module, shapes: dict) -> str:
    """The last feature maps the forward pass computes, before the classifier (an adaptive pool only fits
    them to the classifier's input size)."""
    modules = dict(model.named_modules())
    return [name for name in shapes if not isinstance(modules[name], ADAPTIVE_POOL)][-1]


def cam(cfg: DictConfig, net: CheckpointModel, x: torch.Tensor, picture, stem: Path) -> list[Path]:
    shapes = feature_map_layers(net.model, x)
    require_feature_maps(shapes, net.model, "cam")
    modules = dict(net.model.named_modules())
    name = chosen_layer(cfg.layer, shapes, net.model) if cfg.layer is not None else default_cam_layer(net.model, shapes)
    layer = modules[name]
    with torch.no_grad():
        probabilities = net.model(x).softmax(dim=1)[0]
    target = target_class(cfg, net, probabilities)
    heat = LayerGradCam(net.model, layer).attribute(x, target=target, relu_attributions=True)
    heat = LayerAttribution.interpolate(heat, (net.image_size, net.image_size), interpolate_mode="bilinear")
    heat = heat[0, 0].detach().numpy()
    method = "CAM" if reaches_classifier_by_global_average(net.model, layer, x, target) else "Grad-CAM"
    predicted = net.class_names[int(probabilities.argmax())]
    print(
        f"predicted {predicted!r} (p = {probabilities.max():.3f}); {method} of layer "
        f"{describe(name, layer, shapes[name])} for class {net.class_names[target]!r}"
    )

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    show_picture(axes[0], picture, f"{Path(cfg.image).name}: predicted {predicted!r}")
    image = axes[1].imshow(heat, cmap="jet")
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    axes[1].set_title(f"{method}, layer {name} {'x'.join(map(str, shapes[name]))}", fontsize=10)
    show_picture(axes[2], picture, f"class {net.class_names[target]!r} (p = {probabilities[target]:.3f})")
    axes[2].imshow(heat, cmap="jet", alpha=0.5)
    return [
        save_panels(fig, axes, Path(f"{stem}_layer{name_part(name)}_class{name_part(net.class_names[target])}.png"))
    ]


def occlusion(cfg: DictConfig, net: CheckpointModel, x: torch.Tensor, picture, stem: Path) -> list[Path]:
    size = net.image_size
    patch = min(cfg.occlusion.patch or max(1, size // 3), size)
    stride = cfg.occlusion.stride or max(1, patch // 4)
    with torch.no_grad():
        probabilities = net.model(x).softmax(dim=1)[0]
    target = target_class(cfg, net, probabilities)
    # the patch's colour in the network's (normalized) input: the training mean is 0 there
    fill = torch.zeros(net.channels)
    if cfg.occlusion.fill != "mean":
        fill = (cfg.occlusion.fill - torch.tensor(net.mean)) / torch.tensor(net.std)
    fill = fill.to(x.dtype).view(1, -1, 1, 1).expand_as(x)
    with torch.no_grad():
        drop = Occlusion(lambda batch: net.model(batch).softmax(dim=1)).attribute(
            x,
            sliding_window_shapes=(net.channels, patch, patch),
            strides=(net.channels, stride, stride),
            target=target,
            baselines=fill,
            perturbations_per_eval=64,
        )
    # captum gives p(class) minus p(class | patch), averaged over the patch positions covering each pixel
    probability = (probabilities[target] - drop[0, 0]).numpy()
    row, col = np.unravel_index(probability.argmin(), probability.shape)
    name = net.class_names[target]
    print(
        f"p({name!r}) = {probabilities[target]:.3f} without the patch; lowest {probability.min():.3f} "
        f"with it over pixel (row {row}, col {col}); patch {patch}x{patch}, stride {stride}"
    )

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    show_picture(axes[0], picture, f"{Path(cfg.image).name}: p({name!r}) = {probabilities[target]:.3f}")
    # scaled from the lowest probability to the unoccluded one: a confident network's map spans a narrow range
    image = axes[1].imshow(probability, cmap="jet_r", vmin=probability.min(), vmax=probabilities[target])
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    axes[1].set_title(f"p({name!r}) with a {patch}x{patch} patch here", fontsize=10)
    show_picture(axes[2], picture, "overlaid (red: the patch hurts most)")
    axes[2].imshow(probability, cmap="jet_r", vmin=probability.min(), vmax=probabilities[target], alpha=0.5)
    colour = "" if cfg.occlusion.fill == "mean" else f"_fill{name_part(cfg.occlusion.fill)}"
    stem = f"{stem}_class{name_part(name)}_patch{patch}_stride{stride}{colour}"
    path, array = save_panels(fig, axes, Path(f"{stem}.png")), Path(f"{stem}.npy")
    np.save(array, probability.astype(np.float32))
    return [path, array]


def save_panels(fig, axes, path: Path) -> Path:
    """A figure of side-by-side pictures (cam, occlusion, guided Grad-CAM, attention), axes off, written."""
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def show_picture(ax, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)


# -------------------------------------------------------------------------- deconvnet, guided, attention


class _DeconvReLU(torch.autograd.Function):
    """Zeiler & Fergus's deconvnet rule: the backward signal rectified, whatever the forward input was."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


class _GuidedReLU(torch.autograd.Function):
    """Guided backpropagation: the backward signal rectified, and passed only where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


RULES = {"deconv": _DeconvReLU, "guided": _GuidedReLU}
RELUS = (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)


class ReluRule(TorchFunctionMode):
    """Every ReLU the network computes, an nn.ReLU module's or a forward's own F.relu (in place or not),
    computed by `rule` (its backward pass is the rule); `calls` counts them."""

    def __init__(self, rule):
        super().__init__()
        self.rule, self.calls = rule, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELUS:
            self.calls += 1
            return self.rule.apply(args[0])
        return func(*args, **(kwargs or {}))


class _Connected(TorchFunctionMode):
    """The network with every ReLU passing its input and every max pool averaging its window: what is left
    is linear, so a unit's gradient is nonzero at exactly the pixels connected to it, its receptive field,
    whichever ReLUs were off and wherever the pools' maxima were for this image."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in RELUS:
            return args[0]
        if func is F.max_pool2d:
            return _window_average(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _window_average(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """The average over a max pool's windows: every input of a window reaches its output."""
    if dilation not in (1, (1, 1)) or return_indices:  # no average pool has these: the max pool itself
        return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode)


def receptive_fields(model: nn.Module, layer: nn.Module, x: torch.Tensor, units) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right), inclusive, of the input pixels connected to each unit (map, row, column,
    ...) of `layer`: the rows and columns where its gradient through the network made linear is nonzero."""
    maps, pixels = traced_maps(model, layer, torch.zeros_like(x), _Connected())
    boxes = []
    for gradient in unit_gradients(maps, pixels, units):
        rows, columns = gradient.abs().sum(dim=0).nonzero(as_tuple=True)
        boxes.append((int(rows.min()), int(rows.max()), int(columns.min()), int(columns.max())))
    return boxes


def traced_maps(model: nn.Module, layer: nn.Module, x: torch.Tensor, mode: TorchFunctionMode):
    """`layer`'s maps [C, H, W] for the one image x, computed under `mode` (the rules of the backward pass)
    with their graph kept, and the input they were computed from (a copy of x that requires grad)."""
    saved = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: saved.update(maps=output))
    x = x.clone().requires_grad_()
    try:
        with torch.enable_grad(), mode:
            model(x)
    finally:
        handle.remove()
    return saved["maps"][0], x


def unit_gradients(maps: torch.Tensor, x: torch.Tensor, units) -> list[torch.Tensor]:
    """The gradient [C, H, W] of each unit (map, row, column, ...) of traced `maps` with respect to the input x."""
    return [
        torch.autograd.grad(maps[c, i, j], x, retain_graph=k < len(units) - 1)[0][0].detach()
        for k, (c, i, j, *_) in enumerate(units)
    ]


def computes_relu(model: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad(), ReluRule(_DeconvReLU) as mode:
        model(x)
    return mode.calls > 0


def is_vision_transformer(model: nn.Module) -> bool:
    """torchvision's ViT (vit_b_16, vit_b_32, vit_tiny): a class token and nn.MultiheadAttention blocks."""
    return isinstance(model, VisionTransformer)


def fitting_modes(net: CheckpointModel, x: torch.Tensor | None = None) -> list[str]:
    """The viz modes that can explain this network (for the line that refuses one that cannot)."""
    x = torch.zeros(1, net.channels, net.image_size, net.image_size) if x is None else x
    shapes = feature_map_layers(net.model, x)
    classifier = net.task != "segmentation"
    relu = bool(shapes) and computes_relu(net.model, x)
    convs = any(isinstance(m, nn.Conv2d) for m in net.model.modules())
    wanted = {
        "featuremaps": bool(shapes), "filters": convs, "cam": bool(shapes) and classifier, "occlusion": classifier,
        "deconv": relu, "guided": relu, "guided_gradcam": relu and classifier,
        "attention": is_vision_transformer(net.model),
    }  # fmt: skip
    return [mode for mode, fits in wanted.items() if fits]


def require_relu(cfg: DictConfig, net: CheckpointModel, x: torch.Tensor) -> None:
    if not computes_relu(net.model, x):
        kinds = ", ".join(dict.fromkeys(type(m).__name__ for m in net.model.modules() if not list(m.children())))
        raise UserError(
            f"viz {cfg.mode} applies a rule for ReLUs (Zeiler & Fergus; Springenberg et al.), and this network "
            f"computes none (its layers: {kinds}); the modes that fit it: {', '.join(fitting_modes(net, x))}"
        )


def strongest_units(maps: torch.Tensor, count: int) -> list[tuple[int, int, int, float]]:
    """(map, row, column, activation) of the strongest unit of each of the `count` most active maps; a map
    with no positive activation has no unit to project (after a ReLU: a map this image leaves dark)."""
    peaks, where = maps.flatten(1).max(dim=1)
    order = [c for c in peaks.argsort(descending=True)[:count].tolist() if peaks[c] > 0]
    width = maps.shape[-1]
    return [(c, int(where[c]) // width, int(where[c]) % width, float(peaks[c])) for c in order]


def project_units(model: nn.Module, layer: nn.Module, x: torch.Tensor, rule, count: int):
    """The input-space projection of the strongest unit of each of the `count` most active maps of `layer`,
    by `rule` (deconvnet or guided), and those units."""
    maps, x = traced_maps(model, layer, x, ReluRule(rule))
    units = strongest_units(maps.detach(), count)
    return unit_gradients(maps, x, units), units


def signed_picture(projection: torch.Tensor) -> np.ndarray:
    """A projection in pixel space for imshow: 0 is mid grey, the largest magnitude black or white."""
    scaled = projection / (2 * projection.abs().max().clamp(min=1e-12)) + 0.5
    return as_picture(scaled.clamp(0, 1))


def projections(cfg: DictConfig, net: CheckpointModel, x: torch.Tensor, picture, stem: Path) -> list[Path]:
    shapes = feature_map_layers(net.model, x)
    require_feature_maps(shapes, net.model, cfg.mode)
    require_relu(cfg, net, x)
    modules = dict(net.model.named_modules())
    convs = [name for name in shapes if isinstance(modules[name], CONV)]
    name = chosen_layer(cfg.layer, shapes, net.model) if cfg.layer is not None else (convs or list(shapes))[-1]
    count = min(cfg.top_k, shapes[name][0])
    found, units = project_units(net.model, modules[name], x, RULES[cfg.mode], count)
    if not units:
        raise UserError(f"viz {cfg.mode}: no map of layer {name} has a positive activation for {cfg.image}: "
                        "nothing to project; choose another layer=")  # fmt: skip
    boxes = receptive_fields(net.model, modules[name], x, units)
    height, width = (max(b[k + 1] - b[k] + 1 for b in boxes) for k in (0, 2))
    how = "deconvnet (Zeiler & Fergus)" if cfg.mode == "deconv" else "guided backpropagation"
    print(
        f"{name}: the strongest unit of its {len(units)} most active maps, projected to pixels by {how}; "
        f"receptive field up to {height}x{width} pixels"
    )
    path = Path(f"{stem}_{name_part(name)}_top{count}.png")
    units_grid(
        picture,
        [signed_picture(p) for p in found],
        [f"map {c} ({i},{j}): {a:.2f}" for c, i, j, a in units],
        boxes,
        path,
        title=f"{how}: layer {describe(name, modules[name], shapes[name])}   ({Path(cfg.image).name})\n"
        f"the strongest unit of each of its {len(units)} most active maps (title: map (row,col): activation), in "
        "pixels: grey 0, white +, black -; dashed: the unit's receptive field",
    )
    return [path]


def units_grid(picture, tiles: list, titles: list[str], boxes: list, path: Path, title: str) -> None:
    """plot_image_grid's layout (8 columns): the image, then each unit's projection with its receptive field
    dashed, so that a student sees where in the image the unit looks and how far it sees."""
    columns = min(8, len(tiles) + 1)
    rows = -(-(len(tiles) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.7 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, tile, name in zip(axes.flat, [picture, *tiles], ["input", *titles]):
        ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=8)
    for ax, (top, bottom, left, right) in zip(axes.flat[1:], boxes):
        # pixel centres are at integer coordinates: a box around whole pixels starts half a pixel before
        frame = Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                          edgecolor="tab:orange", linestyle="--", linewidth=1)  # fmt: skip
        ax.add_patch(frame)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def guided_gradcam(cfg: DictConfig, net: CheckpointModel, x: torch.Tensor, picture, stem: Path) -> list[Path]:
    shapes = feature_map_layers(net.model, x)
    require_feature_maps(shapes, net.model, cfg.mode)
    require_relu(cfg, net, x)
    modules = dict(net.model.named_modules())
    name = chosen_layer(cfg.layer, shapes, net.model) if cfg.layer is not None else default_cam_layer(net.model, shapes)
    with torch.no_grad():
        probabilities = net.model(x).softmax(dim=1)[0]
    target = target_class(cfg, net, probabilities)
    heat = LayerGradCam(net.model, modules[name]).attribute(x, target=target, relu_attributions=True)
    heat = LayerAttribution.interpolate(heat, (net.image_size, net.image_size), interpolate_mode="bilinear")[0, 0]
    heat = (heat / heat.max().clamp(min=1e-12)).detach()
    pixels = x.clone().requires_grad_()
    with torch.enable_grad(), ReluRule(_GuidedReLU):
        score = net.model(pixels)[0, target]
    (guided,) = torch.autograd.grad(score, pixels)
    combined = guided[0] * heat  # Grad-CAM's map gates the guided backpropagation, pixel by pixel
    name_of = net.class_names[target]
    print(f"guided Grad-CAM of class {name_of!r} (p = {probabilities[target]:.3f}), Grad-CAM at layer {name}")
    fig, axes = plt.subplots(1, 4, figsize=(14, 4.0))
    show_picture(axes[0], picture, f"{Path(cfg.image).name}: p({name_of!r}) = {probabilities[target]:.3f}")
    image = axes[1].imshow(heat.numpy(), cmap="jet", vmin=0, vmax=1)
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    axes[1].set_title(f"Grad-CAM, layer {name}", fontsize=10)
    show_picture(axes[2], signed_picture(guided[0]), "guided backpropagation")
    show_picture(axes[3], signed_picture(combined), f"guided Grad-CAM of {name_of!r}")
    return [save_panels(fig, axes, Path(f"{stem}_layer{name_part(name)}_class{name_part(name_of)}.png"))]


def attention_weights(model: VisionTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """Each encoder block's attention weights for one image, averaged over its heads: [tokens, tokens]."""
    weights, handles = [], []

    def ask(module, args, kwargs):  # torchvision's blocks call it with need_weights=False
        return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

    def keep(module, args, kwargs, output):
        weights.append(output[1][0].detach())

    for block in model.encoder.layers:
        handles.append(block.self_attention.register_forward_pre_hook(ask, with_kwargs=True))
        handles.append(block.self_attention.register_forward_hook(keep, with_kwargs=True))
    forward_once(model, x, handles)
    return weights


def rollout(weights: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's attention rollout: the residual path added as the identity, rows renormalized, the
    blocks multiplied from the first: how much each token's final state draws on each input token."""
    tokens = weights[0].shape[0]
    result = torch.eye(tokens)
    for attention in weights:
        mixed = 0.5 * attention + 0.5 * torch.eye(tokens)
        result = (mixed / mixed.sum(dim=-1, keepdim=True)) @ result
    return result


def attention(cfg: DictConfig, net: CheckpointModel, x: torch.Tensor, picture, stem: Path) -> list[Path]:
    if not is_vision_transformer(net.model):
        windows = (
            " (Swin attends within windows and has no class token)" if isinstance(net.model, SwinTransformer) else ""
        )
        raise UserError(
            f"viz attention draws a vision transformer's attention of its class token over the image patches; "
            f"this network is a {type(net.model).__name__}{windows}: the modes that fit it: "
            f"{', '.join(fitting_modes(net, x))}"
        )
    weights = attention_weights(net.model, x)
    grid = net.image_size // net.model.patch_size
    with torch.no_grad():
        probabilities = net.model(x).softmax(dim=1)[0]
    predicted = net.class_names[int(probabilities.argmax())]

    def on_image(row: torch.Tensor) -> np.ndarray:  # the class token's weights over the patches, at pixel size
        patches = row[1:].reshape(1, 1, grid, grid)
        upsampled = F.interpolate(patches, size=(net.image_size, net.image_size), mode="bilinear", align_corners=False)
        return (upsampled[0, 0] / upsampled.max().clamp(min=1e-12)).numpy()

    rolled = on_image(rollout(weights)[0])
    print(
        f"predicted {predicted!r} (p = {probabilities.max():.3f}); attention rollout of the class token through "
        f"{len(weights)} blocks over a {grid}x{grid} grid of {net.model.patch_size}x{net.model.patch_size} patches"
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    show_picture(axes[0], picture, f"{Path(cfg.image).name}: predicted {predicted!r}")
    image = axes[1].imshow(rolled, cmap="jet", vmin=0, vmax=1)
    fig.colorbar(image, ax=axes[1], fraction=0.046)
    axes[1].set_title(f"attention rollout, {len(weights)} blocks (1: its largest)", fontsize=10)
    show_picture(axes[2], picture, "overlaid")
    axes[2].imshow(rolled, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    path, layers = save_panels(fig, axes, Path(f"{stem}.png")), Path(f"{stem}_blocks.png")
    plot_image_grid(
        [on_image(w[0]) for w in weights],
        [f"block {n}" for n in range(len(weights))],
        layers,
        title=f"each block's attention of the class token to the patches (heads averaged)   ({Path(cfg.image).name})",
        scale_each=True,
        cmap="jet",
    )
    return [path, layers]


# the modes that draw from an image (filters draws from the network alone)
DRAW = {"featuremaps": featuremaps, "cam": cam, "occlusion": occlusion, "deconv": projections, "guided": projections,
        "guided_gradcam": guided_gradcam, "attention": attention}  # fmt: skip
