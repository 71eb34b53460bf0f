"""Per-layer parameter and MAC tables, the way a CNN course writes them (Keras `summary()`, the VGG16 slide).

`layer_table(model, (C, H, W))` runs one forward pass of one image through the model, with a forward hook
on every module, and returns one row per layer: name, type, output shape, parameters and the formula that
gives them (`(3*3*64)*128+128` for a conv, `4096*1000+1000` for a dense layer, `2*64` for a batch norm),
MACs and share of the parameters; then the totals. Pure functions of a model and an input shape: no
config, no printing. Build the model on the `meta` device (`with torch.device("meta"): ...`) and nothing is
allocated: shapes and counts come out exactly, VGG-19 costs what LeNet-5 costs.

What is counted as a MAC (multiply-accumulate, for one image; FLOPs = 2 x MACs):
- Conv: Cout * H_out * W_out * (Cin / groups) * kh * kw (grouped and depthwise included; bias adds not).
- Linear: in * out * every leading dimension of its output except the batch, so a Linear applied at each
  position of an [N, H, W, C] tensor (ConvNeXt's pointwise layers) counts H * W times.
- Other leaf modules: the conv/matmul work torch's own flop formulas see inside them (a custom sparse conv).
- A layer whose weight a block uses directly (`F.linear(x, self.qkv.weight)` in Swin's window attention,
  the in- and out-projections of nn.MultiheadAttention) counts as if it had been called: its row gets the
  call, output shape and MACs.
- Attention: the matmuls between activations in a block's own forward (q k^T and the attention weights
  times v; scaled_dot_product_attention inside nn.MultiheadAttention) get a row of their own under the
  block, `<block> (attention)`, with their MAC formula: 2*197*197*768 in a ViT-B/16 block (2 x tokens^2 x d).
  Other conv/matmul work in a block's own code belongs to no row and is reported as a total.
- Excluded everywhere: pooling, activations, normalization, layer scale, residual adds, softmax.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_DEPTH, _NHWC = "_cnncli_depth", "_cnncli_nhwc"


@dataclass
class Row:
    name: str  # the module's qualified name (`features.0`); `(model)` for the model itself
    type: str  # its class
    output_shape: list[int] | None  # PyTorch order without the batch: [C, H, W]; None if never called
    output: str  # as the course writes it: H x W x C for image tensors ("55x55x96"), "-" if never called
    params: int
    trainable: int
    formula: str  # arithmetic that evaluates to `params`, or "sum of N layers" for a folded row
    buffers: int = 0  # non-trained state: BatchNorm running mean/var (+ its batch counter)
    buffer_formula: str = ""
    macs: int = 0
    percent: float = 0.0  # of the model's parameters
    calls: int = 0  # forward calls (a ReLU module shared by a ResNet block is called 3 times)
    folded: int = 0  # layers with parameters folded into this row by `depth`
    shared_with: str = ""  # the first name of a module registered under several (its parameters are counted there)
    size_note: str = ""  # how the output side comes: a transposed conv's (in-1)xstride-2xpad+kernel, U-Net's crop
    macs_formula: str = ""  # arithmetic that evaluates to `macs`, where the course writes it (attention: 2*L*L*d)


@dataclass
class Totals:
    input_shape: list[int]  # [C, H, W]
    params: int
    trainable_params: int
    non_trainable_params: int
    buffers: int
    macs: int  # conv/linear/matmul multiply-accumulates for one image
    flops: int  # 2 x macs
    macs_outside_layers: int | None  # matmul/conv in a block's own forward code, in no row (None: not measured)
    param_bytes: int
    buffer_bytes: int
    activation_bytes: int  # every leaf module's output, per call, one image
    leaf_calls: int
    weight_layers: int  # conv + linear layers (see is_weight_layer), wherever they are
    depth: int  # weight layers on the longest path from input to output (VGG-16: 16, ResNet-50: 50)


@dataclass
class LayerTable:
    rows: list[Row]
    totals: Totals
    model_type: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model_type": self.model_type, "rows": [asdict(r) for r in self.rows], "totals": asdict(self.totals)}


# ----------------------------------------------------------------------------------------------- formulas


def param_formula(module: nn.Module) -> str:
    """The module's own parameters as the arithmetic a course writes: `(3*3*64)*128+128` for a conv."""
    own = dict(module.named_parameters(recurse=False))
    if not own:
        return "0"
    bias = "bias" in own
    if isinstance(module, nn.modules.conv._ConvNd) and set(own) <= {"weight", "bias"}:
        kernel = "*".join(map(str, module.kernel_size))
        cout = module.out_channels
        if module.transposed:  # weight [Cin, Cout/groups, k...]
            text = f"({kernel}*{cout // module.groups})*{module.in_channels}"
        else:  # weight [Cout, Cin/groups, k...]
            text = f"({kernel}*{module.in_channels // module.groups})*{cout}"
        return text + (f"+{cout}" if bias else "")
    if isinstance(module, nn.MultiheadAttention) and set(own) == {"in_proj_weight", "in_proj_bias"}:
        d = module.embed_dim  # q, k and v: three d x d projections with their biases
        return f"3*({d}*{d}+{d})"
    if isinstance(module, nn.Linear) and set(own) <= {"weight", "bias"}:
        return f"{module.in_features}*{module.out_features}" + (f"+{module.out_features}" if bias else "")
    if isinstance(module, _NORMS) and set(own) <= {"weight", "bias"}:
        width = "*".join(map(str, own["weight" if "weight" in own else "bias"].shape))
        return f"{len(own)}*{width}" if len(own) > 1 else width
    return "+".join(_product(p.shape) for p in own.values())


def _product(shape) -> str:
    return "*".join(map(str, shape)) if len(shape) else "1"


def _buffer_formula(module: nn.Module) -> tuple[int, str]:
    own = [b for b in module.buffers(recurse=False) if b is not None]
    if not own:
        return 0, ""
    if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
        c = module.running_mean.numel()
        extra = sum(b.numel() for b in own) - 2 * c
        return 2 * c + extra, f"2*{c}" + (f"+{extra}" if extra else "")
    return sum(b.numel() for b in own), "+".join(_product(b.shape) for b in own)


def layer_macs(module: nn.Module, inputs: tuple, output) -> int | None:
    """MACs of one call of a conv or linear layer for a batch of one; None for any other module."""
    if not isinstance(output, torch.Tensor):
        return None
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        if module.transposed:  # every input pixel is spread over a kernel of every output channel
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            return None if x is None else x.numel() * (module.out_channels // module.groups) * kernel
        return output.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):  # output [..., out]: in * out at every leading position
        return output.numel() * module.in_features
    if isinstance(module, nn.Bilinear):
        return output.numel() * module.in1_features * module.in2_features
    return None


def size_note(module: nn.Module, record: _Record) -> str:
    """How a layer's output side follows from its input's, where the course works it out: a transposed
    convolution's (in - 1) x stride - 2 x pad + kernel, and a module that says it itself (`size_note(input
    shape, output shape)`: U-Net's crop)."""
    if record.input_shape is None or record.shape is None or len(record.shape) != 4:
        return ""
    if isinstance(module, nn.ConvTranspose2d) and module.dilation == (1, 1) and module.output_padding == (0, 0):
        side, stride, pad, kernel = record.input_shape[-1], module.stride[1], module.padding[1], module.kernel_size[1]
        return f"({side}-1)x{stride}-2x{pad}+{kernel} = {record.shape[-1]}"
    if hasattr(module, "size_note"):
        return module.size_note(record.input_shape, record.shape)
    return ""


def is_weight_layer(module: nn.Module) -> bool:
    """A layer that counts towards a network's depth (the 16 of VGG-16): a conv or linear layer, or any
    other layer with a weight matrix or kernel (a parameter of two or more dimensions) of its own."""
    return isinstance(module, WEIGHT_LAYERS) or any(p.dim() >= 2 for p in module.parameters(recurse=False))


# -------------------------------------------------------------------------------------------- shape text


def shape_text(shape, nhwc: bool = False) -> str:
    """An output shape without the batch dimension, image tensors as H x W x C (the course's and Keras'
    order) whatever PyTorch's layout: [1, 96, 55, 55] -> 55x55x96."""
    dims = list(shape)[1:]
    if len(dims) == 3:
        c, h, w = (dims[2], dims[0], dims[1]) if nhwc else dims
        return f"{h}x{w}x{c}"
    return "x".join(map(str, dims)) if dims else "1"


class _Lineage(TorchFunctionMode):
    """Tags every tensor a torch function makes with (a) the number of weight layers on its longest path
    from the input (weight-layer hooks add 1) and (b) whether an image tensor is channels-last (after a
    permute(0, 2, 3, 1), as ConvNeXt blocks do), so shapes print as H x W x C either way."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = out if isinstance(out, (tuple, list)) and not isinstance(out, torch.Size) else (out,)
        outputs = [t for t in outputs if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter)]
        if not outputs:
            return out
        inputs = _tensors(args) + _tensors(kwargs.values())
        depth = max((getattr(t, _DEPTH, 0) for t in inputs), default=0)
        nhwc = next((getattr(t, _NHWC, False) for t in inputs if t.dim() == 4), False)
        if func in (torch.permute, torch.Tensor.permute):
            dims = kwargs.get("dims", args[1:])
            dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else tuple(dims)
            nhwc = dims == (0, 2, 3, 1) if len(dims) == 4 else False
        for t in outputs:
            _tag(t, depth, nhwc and t.dim() == 4)
        return out


def _tensors(values) -> list[torch.Tensor]:
    found = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (tuple, list)):
            found += [t for t in v if isinstance(t, torch.Tensor)]
    return found


def _tag(t: torch.Tensor, depth: int, nhwc: bool) -> None:
    try:
        setattr(t, _DEPTH, depth)
        setattr(t, _NHWC, nhwc)
    except (AttributeError, RuntimeError):  # a tensor subclass without a __dict__
        pass


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    if isinstance(value, dict):
        return next((v for v in value.values() if isinstance(v, torch.Tensor)), None)
    return None


def _all_tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [v for v in value if isinstance(v, torch.Tensor)] if isinstance(value, (tuple, list)) else []


class _OpMacs(TorchDispatchMode):
    """MACs of every conv/matmul op torch runs (torch's own formulas, torch.utils.flop_counter's registry),
    charged to the innermost module running it. For what the conv/linear rules cannot see: layers of other
    kinds (a custom sparse conv, attention) and matmuls in a block's own forward. A mode of our own rather
    than FlopCounterMode, whose first use imports torch._dynamo (a second of start-up)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # no torch._dynamo.disable wrapper (and import) around dispatch
        return False

    @classmethod
    def create(cls) -> _OpMacs | None:
        try:
            from torch.utils.flop_counter import flop_registry
        except Exception:  # noqa: BLE001 (a torch without it: the conv/linear rows are still exact
            return None
        return cls(flop_registry)

    def __init__(self, registry: dict):
        super().__init__()
        self.registry = registry
        self.stack: list[int | None] = [None]
        self.macs: dict[int | None, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in self.registry and func is not torch.ops.prim.device.default:
            with self:  # a composite op: count the ops it is made of
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        out = func(*args, **kwargs)
        if packet in self.registry:
            self.macs[self.stack[-1]] += int(self.registry[packet](*args, **kwargs, out_val=out)) // 2
        return out


# -------------------------------------------------------------------------------------------------- engine


@dataclass
class _Record:
    calls: int = 0
    shape: list[int] | None = None
    nhwc: bool = False
    macs: int | None = None  # conv/linear by formula; other leaves from the op counter
    activation_bytes: int = 0
    call_shapes: list = field(default_factory=list)  # (shape, nhwc, macs) of each call, in order
    input_shape: list[int] | None = None  # of the first call's first input
    weight_macs: int = 0  # a block's own weights used directly (nn.MultiheadAttention's q, k, v projections)
    attention_macs: int = 0  # matmuls between activations in the block's own forward (q k^T, weights x v)
    attention_terms: list = field(default_factory=list)  # their formulas, one per matmul


def _called(record: _Record, output: torch.Tensor, given: torch.Tensor | None, macs: int, linear: bool) -> None:
    """What a call of a layer records, for a layer whose weight a block used directly. A linear layer's
    features are its output's last dimension: written last (windows x tokens x features), as the course does."""
    shape = list(output.shape) if output.shape[0] == 1 else [1, *output.shape]  # a block's windows (Swin) kept
    record.calls += 1
    if record.shape is None:
        record.shape, record.nhwc = shape, linear and len(shape) == 4
        record.input_shape = list(given.shape) if given is not None else None
    record.macs = (record.macs or 0) + macs
    record.activation_bytes += output.numel() * output.element_size()
    record.call_shapes.append((shape, linear and len(shape) == 4, macs))


def _term(dims) -> str:
    return "*".join(str(d) for d in dims if d != 1) or "1"


def _sum_of_terms(terms: list[str]) -> str:
    """`a+a+b` -> `2*a+b`: attention's two matmuls of equal size read as the course writes them (2*L*L*d)."""
    counts = {term: terms.count(term) for term in terms}
    return "+".join(term if n == 1 else f"{n}*{term}" for term, n in counts.items())


COUNTED_HERE = "counted by _Functional"


class _Functional(TorchFunctionMode):
    """The work a block does with its layers' weights and its activations in its own forward code, charged
    where a course puts it. (1) F.linear / F.conv*d given the weight of a layer that is not running itself:
    that layer's call (Swin's window attention calls F.linear(x, self.qkv.weight, ...)); given a block's own
    weight (not a layer's): the block's weight_macs. (2) nn.MultiheadAttention's F.multi_head_attention_forward,
    whose inner calls no mode sees: its q, k, v projections (the block's weight_macs), attention (2 x L x S x
    d) and output projection (the out_proj layer's call), from its arguments. (3) A matmul of two activations
    in a block's own forward: the block's attention. The op counter is kept off what is charged here."""

    LINEAR = (F.linear, F.conv1d, F.conv2d, F.conv3d)
    MATMUL = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm)

    def __init__(self, model: nn.Module, records: dict, leaves: set, stack: list):
        super().__init__()
        self.records, self.leaves, self.stack = records, leaves, stack  # stack: the modules running, innermost last
        self.layers = {id(m.weight): m for m in model.modules() if isinstance(m, WEIGHT_LAYERS[:2])}
        self.owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}

    def running(self):
        return self.stack[-1]

    def quiet(self, func, args, kwargs):
        """func run with the op counter charging a key that is never read (this mode counted it)."""
        self.stack.append(COUNTED_HERE)
        try:
            return func(*args, **kwargs)
        finally:
            self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.multi_head_attention_forward:
            return self.multi_head_attention(func, args, kwargs)
        if func in self.LINEAR and len(args) > 1 and id(args[1]) in self.owners:
            layer = self.layers.get(id(args[1]))
            if layer is None or id(layer) != self.running():
                return self.weights_used(func, args, kwargs, layer)
        running = self.running()
        if func in self.MATMUL and len(args) == 2 and running in self.records and running not in self.leaves:
            a, b = args
            activations = all(isinstance(t, torch.Tensor) and t.dim() >= 2 and id(t) not in self.owners for t in args)
            if activations:
                out = self.quiet(func, args, kwargs)
                m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
                record = self.records[running]
                record.attention_macs += out.numel() * k
                record.attention_terms.append(_term([*out.shape[:-2], *sorted((m, n, k), reverse=True)]))
                return out
        return func(*args, **kwargs)

    def weights_used(self, func, args, kwargs, layer: nn.Module | None):
        x, weight = args[0], args[1]
        out = self.quiet(func, args, kwargs)
        macs = out.numel() * (weight.shape[1] if func is F.linear else weight[0].numel())
        if layer is not None:
            _called(self.records[id(layer)], out, x, macs, linear=func is F.linear)
            _tag(out, getattr(x, _DEPTH, 0) + 1, False)
        else:
            self.records[id(self.owners[id(weight)])].weight_macs += macs
        return out

    def multi_head_attention(self, func, args, kwargs):
        call = inspect.signature(F.multi_head_attention_forward).bind(*args, **kwargs).arguments
        query, key, value = call["query"], call["key"], call["value"]
        out = self.quiet(func, args, kwargs)
        batched = query.dim() == 3  # [L, N, E]; nn.MultiheadAttention moves a batch_first batch there
        L, S, E = query.shape[0], key.shape[0], query.shape[-1]
        N = query.shape[1] if batched else 1
        separate = call.get("use_separate_proj_weight", False)
        projections = N * E * (L * E + S * key.shape[-1] + S * value.shape[-1])
        weight = call["q_proj_weight"] if separate else call["in_proj_weight"]
        block = self.records[id(self.owners[id(weight)])] if id(weight) in self.owners else None
        if block is not None:
            block.weight_macs += projections
            block.attention_macs += 2 * N * L * S * E
            block.attention_terms += [_term([N, L, S, E])] * 2
        out_proj = self.layers.get(id(call["out_proj_weight"]))
        attention = out[0] if isinstance(out, tuple) else out
        if out_proj is not None:
            shape = attention.transpose(0, 1) if batched else attention  # as a batch_first call returns it
            _called(self.records[id(out_proj)], shape, None, N * L * E * E, linear=True)
        _tag(attention, max(getattr(t, _DEPTH, 0) for t in (query, key, value)) + 2, False)
        return out


def model_device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("meta")


def layer_table(model: nn.Module, input_shape: tuple[int, ...], depth: int | None = None) -> LayerTable:
    """The per-layer table of `model` for one input of `input_shape` ((C, H, W), no batch).

    depth: like torchinfo's; modules nested deeper than `depth` (the model's children are depth 1) are
    folded into their ancestor at that depth, whose row sums their parameters and MACs. None: every layer.
    The model runs in eval mode (restored afterwards) on the device its parameters are on; on `meta` no
    memory is used. Exceptions from the forward pass (an input the model cannot take) propagate.
    """
    modules = list(model.named_modules())
    records = {id(m): _Record() for _, m in modules}
    leaves = {id(m) for _, m in modules if not any(True for _ in m.children())}
    weight_layers = {id(m) for _, m in modules if id(m) in leaves and is_weight_layer(m)}

    counter = _OpMacs.create()
    stack = counter.stack if counter is not None else [None]  # the modules running, innermost last
    functional = _Functional(model, records, leaves, stack)

    def pre_hook(module, inputs):
        stack.append(id(module))

    def hook(module, inputs, output):
        stack.pop()
        record = records[id(module)]
        record.calls += 1
        first, given = _first_tensor(output), _first_tensor(inputs)
        if first is not None and first.dim() == 4 and given is not None and given.shape == first.shape:
            if getattr(given, _NHWC, False):  # a block that keeps its input's shape keeps its layout (Swin's)
                _tag(first, getattr(first, _DEPTH, 0), True)
        if record.shape is None and first is not None:
            record.shape, record.nhwc = list(first.shape), bool(getattr(first, _NHWC, False))
            record.input_shape = list(given.shape) if given is not None else None
        macs = None
        if id(module) in leaves:
            record.activation_bytes += sum(t.numel() * t.element_size() for t in _all_tensors(output))
            macs = layer_macs(module, inputs, output)
            if macs is not None:
                record.macs = (record.macs or 0) + macs
        if first is not None:
            record.call_shapes.append((list(first.shape), bool(getattr(first, _NHWC, False)), macs))
        if id(module) in weight_layers and isinstance(output, torch.Tensor):
            inputs_depth = max((getattr(t, _DEPTH, 0) for t in _tensors(inputs)), default=0)
            _tag(output, inputs_depth + 1, bool(getattr(output, _NHWC, False)))

    handles = [m.register_forward_pre_hook(pre_hook) for _, m in modules]
    handles += [m.register_forward_hook(hook) for _, m in modules]
    training = {id(m): m.training for _, m in modules}
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((1, *input_shape), device=model_device(model), dtype=dtype)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        model.eval()
        # nn.MultiheadAttention's fused CPU/GPU kernel hides its matmuls from the counters: the plain path
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), _Lineage(), functional, counter if counter is not None else contextlib.nullcontext():
            output = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for handle in handles:
            handle.remove()
        for _, m in modules:
            m.train(training[id(m)])

    outside = None
    if counter is not None:  # leaf modules of other kinds: the conv/matmul work done inside them
        for _, m in modules:
            record = records[id(m)]
            if id(m) in leaves and record.macs is None:
                record.macs = counter.macs.get(id(m), 0)
        outside = sum(n for key, n in counter.macs.items() if key not in leaves and key != COUNTED_HERE)

    # every name a module is registered under gets its row (named_modules() lists a reused instance once)
    rows = _rows(list(model.named_modules(remove_duplicate=False)), records, leaves, depth)
    total_params = sum(p.numel() for p in model.parameters())
    for row in rows:
        row.percent = 100.0 * row.params / total_params if total_params else 0.0
    leaf_macs = sum(records[id(m)].macs or 0 for _, m in modules if id(m) in leaves)
    block_macs = sum(records[id(m)].weight_macs + records[id(m)].attention_macs for _, m in modules)
    macs = leaf_macs + block_macs + (outside or 0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out_tensor = _first_tensor(output)
    totals = Totals(
        input_shape=list(input_shape),
        params=total_params,
        trainable_params=trainable,
        non_trainable_params=total_params - trainable,
        buffers=sum(b.numel() for b in model.buffers()),
        macs=macs,
        flops=2 * macs,
        macs_outside_layers=outside,
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        activation_bytes=sum(records[id(m)].activation_bytes for _, m in modules if id(m) in leaves),
        leaf_calls=sum(records[id(m)].calls for _, m in modules if id(m) in leaves),
        weight_layers=len(weight_layers),
        depth=int(getattr(out_tensor, _DEPTH, 0)) if out_tensor is not None else 0,
    )
    return LayerTable(rows=rows, totals=totals, model_type=type(model).__name__, notes=attention_notes(model))


def _rows(modules, records, leaves, depth: int | None) -> list[Row]:
    """One row per registered name. A module instance registered under several names (one LRN layer placed
    twice in a Sequential) is one module called several times: when it is called once per name, in order,
    each name's row gets its own call's shape and MACs; its parameters are counted in its first row."""
    limit = math.inf if depth is None else depth
    registered: dict[int, list[str]] = {}  # each module's names
    for name, m in modules:
        registered.setdefault(id(m), []).append(name)
    rows = []
    for name, m in modules:
        level = name.count(".") + 1 if name else 0
        if level > limit:
            continue
        record = records[id(m)]
        label = name or "(model)"
        output = shape_text(record.shape, record.nhwc) if record.shape is not None else "-"
        shape = record.shape[1:] if record.shape is not None else None
        if id(m) in leaves:
            own = list(m.parameters(recurse=False))
            buffers, buffer_formula = _buffer_formula(m)
            same = registered[id(m)]
            macs, calls, first = record.macs or 0, record.calls, same[0]
            if len(same) > 1 and len(record.call_shapes) == len(same):  # call i ran as name i
                call_shape, nhwc, call_macs = record.call_shapes[same.index(name)]
                shape, output, macs, calls = call_shape[1:], shape_text(call_shape, nhwc), call_macs or 0, 1
            elif len(same) > 1 and name != first:
                macs = 0  # counted in the first name's row
            counted = own if name == first else []
            rows.append(
                Row(label, type(m).__name__, shape, output, sum(p.numel() for p in counted),
                    sum(p.numel() for p in counted if p.requires_grad), param_formula(m) if name == first else "0",
                    buffers if name == first else 0, buffer_formula if name == first else "", macs, calls=calls,
                    shared_with="" if name == first else first, size_note=size_note(m, record))
            )  # fmt: skip
        elif level == limit:  # fold the whole subtree into this row
            params = list(m.parameters())
            inner = [s for s in m.modules() if any(True for _ in s.parameters(recurse=False))]
            macs = sum(
                (records[id(s)].macs or 0) if id(s) in leaves else _block_macs(records[id(s)]) for s in m.modules()
            )
            rows.append(
                Row(label, type(m).__name__, shape, output, sum(p.numel() for p in params),
                    sum(p.numel() for p in params if p.requires_grad), f"sum of {len(inner)} layers",
                    sum(b.numel() for b in m.buffers()), "", macs, calls=record.calls, folded=len(inner))
            )  # fmt: skip
        else:
            if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
                own = list(m.parameters(recurse=False))  # a block's own parameters: ConvNeXt's layer scale
                buffers, buffer_formula = _buffer_formula(m)
                rows.append(
                    Row(label, _block_type(m), shape, output, sum(p.numel() for p in own),
                        sum(p.numel() for p in own if p.requires_grad), param_formula(m), buffers, buffer_formula,
                        record.weight_macs, calls=record.calls)
                )  # fmt: skip
            if record.attention_macs:
                rows.append(
                    Row(f"{label} (attention)", "matmuls: q k^T, weights x v", None, "-", 0, 0, "0",
                        macs=record.attention_macs, calls=record.calls,
                        macs_formula=_sum_of_terms(record.attention_terms))
                )  # fmt: skip
    return rows


def _block_macs(record: _Record) -> int:
    return record.weight_macs + record.attention_macs


def _block_type(m: nn.Module) -> str:
    """A block's class and what its own parameters are: `CNBlock (layer_scale)`; attention's projections."""
    if isinstance(m, nn.MultiheadAttention) and m._qkv_same_embed_dim:
        return f"{type(m).__name__}: q, k, v ({m.num_heads} heads of {m.head_dim})"
    names = [n for n, _ in m.named_parameters(recurse=False)]
    return f"{type(m).__name__} ({', '.join(names) or 'buffers'})"


def attention_notes(model: nn.Module) -> list[str]:
    """How an attention block's parameters add up, once per kind and width: nn.MultiheadAttention (ViT),
    and a block with `qkv` and `proj` linear layers (Swin's window attention, timm's Attention)."""
    notes = []
    for m in model.modules():
        children = dict(m.named_children())
        if isinstance(m, nn.MultiheadAttention) and m._qkv_same_embed_dim and m.in_proj_bias is not None:
            d, heads = m.embed_dim, m.num_heads
        elif isinstance(children.get("qkv"), nn.Linear) and isinstance(children.get("proj"), nn.Linear):
            d, heads = children["proj"].in_features, getattr(m, "num_heads", "?")
        else:
            continue
        note = (f"{type(m).__name__}, d = {d}, {heads} heads: q, k, v and output projections 4d^2+4d = "
                f"4*{d}*{d}+4*{d} = {4 * d * d + 4 * d:,} parameters")  # fmt: skip
        if note not in notes:
            notes.append(note)
    return notes
