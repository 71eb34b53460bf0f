"""Beyond the course's CNNs: ViT (vit_b_16, vit_b_32, vit_tiny), Swin (swin_t/s/b) and ConvNeXt-B. Their builders
match torchvision's layer for layer (so its ImageNet weights fit), their input checks are one line, transfer
learning finds their heads, and `cnncli params` counts their attention: rows for the q, k, v and output
projections, a row for q k^T and weights x v with its formula, totals checked against an independent count
and against fvcore's."""

import re

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from torch import nn

import cnncli
from cnncli.errors import ConfigError
from cnncli.layer_table import layer_table
from cnncli.models import build_model, convnext, swin, vit
from cnncli.models.transfer import imagenet_weights

NEW = {
    "vit_b_16": vit.vit_b_16,
    "vit_b_32": vit.vit_b_32,
    "swin_t": swin.swin_t,
    "swin_s": swin.swin_s,
    "swin_b": swin.swin_b,
    "convnext_base": convnext.convnext_base,
}


def on_meta(builder, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return builder(**kwargs)


@pytest.fixture(scope="module")
def compose_train():
    with initialize_config_dir(str(cnncli.config_dir()), version_base="1.3"):
        yield lambda *overrides: compose("train", overrides=list(overrides))


# ------------------------------------------------------------------------------------------------ builders


@pytest.mark.parametrize("name", NEW)
def test_the_network_is_torchvisions_so_its_imagenet_weights_fit(name):
    ours = on_meta(NEW[name]).state_dict()
    theirs = on_meta(getattr(torchvision.models, name)).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]
    weights = imagenet_weights({"_target_": f"cnncli.models.{NEW[name].__module__.split('.')[-1]}.{name}"})
    assert weights is torchvision.models.get_model_weights(name).DEFAULT


def test_vit_input_is_whole_patches_in_one_line():
    with pytest.raises(ConfigError) as error:
        vit.vit_tiny(image_size=30)
    assert (error.value.key, error.value.problem) == (
        "image_size",
        "vit_tiny cuts its input into 4x4 patches: the side must be a multiple of 4, got 30; set data.image_size=28 "
        "or 32",
    )
    with pytest.raises(ConfigError, match=r"vit_b_16 needs inputs of at least 16x16, got 8x8"):
        vit.vit_b_16(image_size=8)
    with pytest.raises(ConfigError, match="num_heads: must divide hidden_dim=256"):
        vit.vit_tiny(num_heads=3)
    with pytest.raises(ConfigError, match="num_layers: must be an integer >= 1, got 0"):
        vit.vit_tiny(num_layers=0)
    # the network is built for its input side: 48x48 makes a 12x12 grid of tokens
    model = vit.vit_tiny(in_channels=1, image_size=48, num_layers=1)
    assert model.encoder.pos_embedding.shape == (1, 12 * 12 + 1, 256)
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 10)


def test_cnncli_refuses_a_vit_on_a_side_that_is_no_multiple_of_its_patch(tmp_path):
    from conftest import cnncli_here

    result = cnncli_here("train", "model=vit_tiny", "data.image_size=30", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: model.image_size: vit_tiny cuts its input into 4x4 patches: the side must be a multiple of 4, "
        "got 30; set data.image_size=28 or 32"
    )


def test_vit_tiny_is_vit_lite_7_4():
    model = vit.vit_tiny()
    blocks = model.encoder.layers
    assert len(blocks) == 7 and model.patch_size == 4 and model.hidden_dim == 256
    attention = blocks[0].self_attention
    assert (attention.num_heads, attention.head_dim, blocks[0].mlp[0].out_features) == (4, 64, 512)


@pytest.mark.parametrize(
    "overrides, trainable",
    [
        (("model=vit_tiny", "model.freeze=all_but_head"), {"heads.head.weight", "heads.head.bias"}),
        (("model=vit_tiny", "model.freeze=features"),
         {"encoder.ln.weight", "encoder.ln.bias", "heads.head.weight", "heads.head.bias"}),
        (("model=swin_t", "model.freeze=all_but_head"), {"head.weight", "head.bias"}),
        (("model=swin_t", "model.freeze=features"), {"norm.weight", "norm.bias", "head.weight", "head.bias"}),
    ],
)  # fmt: skip
def test_transfer_learning_finds_the_declared_heads(compose_train, overrides, trainable):
    with torch.device("meta"):
        model = build_model(compose_train(*overrides, "data.image_size=32").model)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable


def test_vit_weights_from_another_size_get_interpolated_position_embeddings(compose_train, tmp_path):
    """A ViT trained at 64x64 on RGB starts a 32x32 gray one: position embeddings resized to the 8x8 grid
    (bicubic, the class token's kept), the patch embedding's RGB filters summed, the head fresh."""
    torch.manual_seed(0)
    source = vit.vit_tiny(in_channels=3, image_size=64, num_classes=5, num_layers=2)
    torch.save(source.state_dict(), tmp_path / "vit64.pt")
    model = build_model(
        compose_train("model=vit_tiny", "model.num_layers=2", f"model.weights={tmp_path / 'vit64.pt'}").model
    )
    state, old = model.state_dict(), source.state_dict()
    assert state["encoder.pos_embedding"].shape == (1, 65, 256)
    assert torch.equal(state["encoder.pos_embedding"][:, 0], old["encoder.pos_embedding"][:, 0])
    grid = old["encoder.pos_embedding"][0, 1:].T.reshape(1, 256, 16, 16)
    resized = nn.functional.interpolate(grid, size=8, mode="bicubic", align_corners=True)
    assert torch.allclose(state["encoder.pos_embedding"][0, 1:], resized.reshape(256, 64).T, atol=1e-6)
    assert torch.equal(state["conv_proj.weight"], old["conv_proj.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(
        state["encoder.layers.encoder_layer_1.mlp.3.weight"], old["encoder.layers.encoder_layer_1.mlp.3.weight"]
    )
    assert state["heads.head.weight"].shape == (10, 256)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name, file", [("vit_b_16", "vit_b_16-c867db91.pth"), ("swin_t", "swin_t-704ceda3.pth")])
def test_offline_pretrained_says_where_to_put_the_file(compose_train, tmp_path, monkeypatch, name, file):
    import urllib.error

    from cnncli.errors import UserError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, destination, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as error:
        build_model(compose_train(f"model={name}", "model.pretrained=true", "data.image_size=32").model)
    message = str(error.value)
    assert message.startswith(f"model.pretrained: cannot download https://download.pytorch.org/models/{file}")
    assert f"put that file at {tmp_path}/torch/hub/checkpoints/{file}" in message and "\n" not in message


# ------------------------------------------------------------------------------------------ cnncli params


@pytest.fixture(scope="module")
def tables():
    return {
        "vit_b_16": layer_table(on_meta(vit.vit_b_16), (3, 224, 224)),
        "swin_t": layer_table(on_meta(swin.swin_t), (3, 224, 224)),
    }


def vit_macs(tokens: int, d: int, mlp: int, layers: int, patch_pixels: int, classes: int) -> int:
    """ViT's MACs by hand: patch embedding, then per block q, k, v and output projections (4 L d^2), q k^T and
    weights x v (2 L^2 d), the MLP (2 L d m); the head on the class token."""
    patches = tokens - 1
    return (
        patches * d * patch_pixels
        + layers * (4 * tokens * d * d + 2 * tokens * tokens * d + 2 * tokens * d * mlp)
        + d * classes
    )


def swin_macs(width: int, depths: list[int], side: int = 56, window: int = 7, classes: int = 1000) -> int:
    """Swin's MACs by hand, from the paper's eq. 2: window attention 4hwC^2 + 2M^2hwC (the map padded to whole
    windows), the MLP 8hwC^2, patch merging 4C -> 2C, the 4x4 patch embedding and the head."""
    total = side * side * width * 4 * 4 * 3
    for stage, blocks in enumerate(depths):
        c, r = width * 2**stage, side // 2**stage
        if stage:
            total += r * r * 2 * c * c  # 2x2 tokens of c/2 concatenated (2c) -> c
        padded = -(-r // window) * window
        total += blocks * (4 * r * r * c * c + 2 * window * window * padded * padded * c + 8 * r * r * c * c)
    return total + width * 2 ** (len(depths) - 1) * classes


def test_vit_b_16_rows_read_like_the_papers_table(tables):
    table = tables["vit_b_16"]
    rows = {row.name: row for row in table.rows}
    block = "encoder.layers.encoder_layer_0"
    qkv, attention, out = (
        rows[f"{block}.self_attention"],
        rows[f"{block}.self_attention (attention)"],
        rows[f"{block}.self_attention.out_proj"],
    )
    assert (qkv.type, qkv.formula, qkv.params, qkv.output) == (
        "MultiheadAttention: q, k, v (12 heads of 64)", "3*(768*768+768)", 1_771_776, "197x768")  # fmt: skip
    assert qkv.macs == 3 * 197 * 768 * 768
    assert (attention.macs, attention.macs_formula, attention.params) == (2 * 197 * 197 * 768, "2*197*197*768", 0)
    assert (out.formula, out.params, out.macs, out.output, out.calls) == (
        "768*768+768",
        590_592,
        197 * 768 * 768,
        "197x768",
        1,
    )
    assert qkv.params + out.params == 4 * 768 * 768 + 4 * 768  # multi-head attention: 4d^2 + 4d
    assert rows[f"{block}.mlp.0"].formula == "768*3072+3072" and rows["conv_proj"].formula == "(16*16*3)*768+768"
    assert sum(1 for row in table.rows if row.name.endswith("(attention)")) == 12
    assert table.notes == [
        "MultiheadAttention, d = 768, 12 heads: q, k, v and output projections 4d^2+4d = 4*768*768+4*768 = "
        "2,362,368 parameters"
    ]
    assert table.totals.macs == vit_macs(197, 768, 3072, 12, 16 * 16 * 3, 1000) == 17_563_828_224
    assert (table.totals.macs_outside_layers, table.totals.depth) == (0, 50)  # 1 + 12 x (q,k,v; out; 2 MLP) + head


def test_swin_t_rows_and_totals(tables):
    table = tables["swin_t"]
    rows = {row.name: row for row in table.rows}
    qkv, proj = rows["features.1.0.attn.qkv"], rows["features.1.0.attn.proj"]  # called by F.linear, not as layers
    assert (qkv.formula, qkv.output, qkv.macs, qkv.calls) == ("96*288+288", "64x49x288", 56 * 56 * 96 * 288, 1)
    assert (proj.output, proj.macs) == ("64x49x96", 56 * 56 * 96 * 96)
    attention = rows["features.1.0.attn (attention)"]  # 64 windows of 7x7 tokens, 3 heads of 32
    assert (attention.macs, attention.macs_formula) == (2 * 64 * 3 * 49 * 49 * 32, "2*64*3*49*49*32")
    assert rows["features.1.0.attn"].formula == "169*3"  # a relative position bias per head and offset
    assert rows["features.1.0.attn"].output == "56x56x96"  # channels-last, as the course writes it
    assert table.totals.macs == swin_macs(96, [2, 2, 6, 2]) == 4_490_566_656
    assert table.totals.macs_outside_layers == 0


def test_totals_agree_with_fvcore_and_torch_flop_counter(tables):
    """fvcore 0.1.5 (FlopCountAnalysis, measured 2026-12-04 on torchvision 0.29's networks at 224x224) counts
    conv + linear (+ matmul) as we do, but skips aten::scaled_dot_product_attention: for ViT-B/16 it gives
    16,848,500,736 (plus 18,912,000 for LayerNorm, which we do not count), 12 attention rows fewer than ours.
    For Swin-T its conv + linear + matmul make 4,490,566,656, ours to the multiply-accumulate."""
    from torch.utils.flop_counter import FlopCounterMode

    vit_attention = sum(row.macs for row in tables["vit_b_16"].rows if row.name.endswith("(attention)"))
    assert tables["vit_b_16"].totals.macs - vit_attention == 16_848_500_736
    assert tables["swin_t"].totals.macs == 14_450_688 + 4_335_974_400 + 140_141_568
    for name, table in tables.items():
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with FlopCounterMode(display=False) as counter:
                on_meta(getattr(torchvision.models, name)).eval()(torch.zeros(1, 3, 224, 224, device="meta"))
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
        assert table.totals.macs == counter.get_total_flops() // 2
        assert sum(row.params for row in table.rows) == table.totals.params
        for row in table.rows:
            assert eval(row.formula) == row.params, (row.name, row.formula)
            if row.macs_formula:
                assert eval(row.macs_formula) == row.macs, (row.name, row.macs_formula)


def test_a_counted_vit_gives_the_same_table_on_the_cpu_as_on_meta():
    """On the CPU nn.MultiheadAttention would take its fused kernel, which hides the attention matmuls: the
    table turns it off while it counts, and back on after."""
    torch.manual_seed(0)
    cpu = layer_table(vit.vit_tiny(num_layers=2), (3, 32, 32))
    meta = layer_table(on_meta(vit.vit_tiny, num_layers=2), (3, 32, 32))
    assert [(r.name, r.macs, r.output) for r in cpu.rows] == [(r.name, r.macs, r.output) for r in meta.rows]
    assert cpu.totals.macs == vit_macs(65, 256, 512, 2, 4 * 4 * 3, 10) and torch.backends.mha.get_fastpath_enabled()


def test_depth_folds_attention_into_its_block(tables):
    folded = layer_table(on_meta(vit.vit_b_16), (3, 224, 224), depth=3)
    blocks = [row for row in folded.rows if re.fullmatch(r"encoder\.layers\.encoder_layer_\d+", row.name)]
    assert len(blocks) == 12 and blocks[0].macs == (tables["vit_b_16"].totals.macs - 115_605_504 - 768_000) // 12
    assert sum(row.macs for row in folded.rows) == tables["vit_b_16"].totals.macs


def test_cnncli_params_vit_b_16(tmp_path):
    from conftest import cnncli

    result = cnncli("params", "model=vit_b_16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    attention = lines["encoder.layers.encoder_layer_11.self_attention (attention)"]
    assert "59,610,624 = 2*197*197*768" in attention
    assert "3*(768*768+768)" in lines["encoder.layers.encoder_layer_11.self_attention"]
    assert (
        "attention:         MultiheadAttention, d = 768, 12 heads: q, k, v and output projections 4d^2+4d"
        in result.stdout
    )
    assert "MACs:              17,563,828,224" in result.stdout


def test_vit_tiny_for_cifar10_trains_a_step(compose_train):
    """`cnncli train model=vit_tiny data=cifar10` (the README's; CIFAR-10 is not downloaded here): the network
    and recipe that command composes, one optimizer step on CIFAR-10-shaped images."""
    cfg = compose_train("model=vit_tiny", "data=cifar10")
    assert (cfg.optimizer._target_, cfg.optimizer.lr, cfg.scheduler._target_, cfg.label_smoothing) == (
        "torch.optim.AdamW", 0.0005, "torch.optim.lr_scheduler.OneCycleLR", 0.1)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model)
    assert model.image_size == 32 and model.conv_proj.in_channels == 3 and model.heads.head.out_features == 10
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
