"""The PyTorch converter: random PyTorch backbones saved as .pth, converted, give our features.

The PyTorch models are defined here with torchvision's and face.evoLVe's module and parameter
names (torchvision's own wheel does not load with the CPU torch build). Tests that need torch
skip without it; the key-mapping errors are checked on numpy state_dicts and always run.
"""

import importlib
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldl_jax import convert, models, pretrained
from ldl_jax.train_state import create_optimizer, create_train_state
from tests.helpers.tiny import make_tiny_config

try:
    import torch
    from torch import nn
except ImportError:
    torch = None

requires_torch = pytest.mark.skipif(
    torch is None,
    reason="torch is not installed (the converter's parity tests need it): "
    "pip install torch==2.13.0+cpu, see README 'Pretrained backbones'",
)

if torch is not None:

    class BasicBlock(nn.Module):
        """torchvision.models.resnet.BasicBlock."""

        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class Bottleneck(nn.Module):
        """torchvision.models.resnet.Bottleneck (v1.5: the stride on the 3x3 convolution)."""

        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + identity)

    class ResNet(nn.Module):
        """torchvision.models.resnet.ResNet; `features` is the pooled input of `fc`."""

        def __init__(self, block, layers, num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._make_layer(block, 64, layers[0])
            self.layer2 = self._make_layer(block, 128, layers[1], 2)
            self.layer3 = self._make_layer(block, 256, layers[2], 2)
            self.layer4 = self._make_layer(block, 512, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def features(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return torch.flatten(self.avgpool(x), 1)

    class BottleneckIR(nn.Module):
        """face.evoLVe's bottleneck_IR."""

        def __init__(self, in_channel, depth, stride):
            super().__init__()
            if in_channel == depth:
                self.shortcut_layer = nn.MaxPool2d(1, stride)
            else:
                self.shortcut_layer = nn.Sequential(
                    nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False),
                    nn.BatchNorm2d(depth),
                )
            self.res_layer = nn.Sequential(
                nn.BatchNorm2d(in_channel),
                nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
                nn.PReLU(depth),
                nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
                nn.BatchNorm2d(depth),
            )

        def forward(self, x):
            return self.res_layer(x) + self.shortcut_layer(x)

    class IRBackbone(nn.Module):
        """face.evoLVe's Backbone(mode='ir'); the defaults are IR-50 at 112."""

        def __init__(
            self,
            stage_sizes=(3, 4, 14, 3),
            stage_filters=(64, 128, 256, 512),
            embedding_size=512,
            input_size=112,
        ):
            super().__init__()
            first, last = stage_filters[0], stage_filters[-1]
            self.input_layer = nn.Sequential(
                nn.Conv2d(3, first, (3, 3), 1, 1, bias=False),
                nn.BatchNorm2d(first),
                nn.PReLU(first),
            )
            side = input_size // 2 ** len(stage_sizes)
            self.output_layer = nn.Sequential(
                nn.BatchNorm2d(last),
                nn.Dropout(),
                nn.Flatten(),
                nn.Linear(last * side * side, embedding_size),
                nn.BatchNorm1d(embedding_size),
            )
            units, in_channel = [], first
            for size, depth in zip(stage_sizes, stage_filters, strict=True):
                units.append(BottleneckIR(in_channel, depth, 2))
                units += [BottleneckIR(depth, depth, 1) for _ in range(size - 1)]
                in_channel = depth
            self.body = nn.Sequential(*units)

        def features(self, x):
            return self.output_layer(self.body(self.input_layer(x)))


def _randomize(model):
    """Random BatchNorm statistics and affine parameters and PReLU slopes (the defaults are
    1s and 0s, which would hide a swapped or dropped array)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                size = module.num_features
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(0.5 * torch.rand(module.weight.shape, generator=generator))
    return model.eval()


def _torch_model(name):
    torch.manual_seed(0)
    if name == "ir_tiny":  # models.IRTiny: stages (1, 1) of 8 and 16 filters, 32-d embedding
        model = IRBackbone((1, 1), (8, 16), 32, input_size=16)
    elif name == "resnet18":
        model = ResNet(BasicBlock, (2, 2, 2, 2))
    else:
        model = ResNet(Bottleneck, (3, 4, 6, 3))
    return _randomize(model)


def _msceleb_wrapping(state_dict):
    """As SCN's resnet18_msceleb.pth: DataParallel keys, an identity head, under 'state_dict'."""
    wrapped = {f"module.{key}": value for key, value in state_dict.items()}
    wrapped["module.feature.weight"] = torch.zeros(7, 512)
    wrapped["module.feature.bias"] = torch.zeros(7)
    return {"state_dict": wrapped, "epoch": 3}


CASES = {
    # source: (our backbone, input size, how the file wraps the state_dict)
    "evolve_ir50": ("ir_tiny", 16, lambda state_dict: state_dict),
    "msceleb_resnet18": ("resnet18", 32, _msceleb_wrapping),
    "torchvision_resnet18": ("resnet18", 32, lambda state_dict: state_dict),
    "torchvision_resnet50": ("resnet50", 32, lambda state_dict: state_dict),
}


def _pretrained_state(backbone, size, pretrained_dir):
    config = make_tiny_config(input_size=size)
    config.model.backbone = backbone
    config.model.pretrained = str(pretrained_dir) if pretrained_dir else ""
    model = models.create_model(config)
    return model, create_train_state(config, model, create_optimizer(config, 1), 8)


@pytest.mark.slow
@requires_torch
@pytest.mark.parametrize("source", sorted(CASES))
def test_converted_backbone_gives_the_pytorch_features(source, tmp_path):
    backbone, size, wrap = CASES[source]
    torch_model = _torch_model(backbone)
    path = tmp_path / "weights.pth"
    torch.save(wrap(torch_model.state_dict()), path)
    info = convert.convert_checkpoint(source, path, tmp_path / "converted", backbone_name=backbone)
    assert info["backbone"] == backbone

    model, state = _pretrained_state(backbone, size, tmp_path / "converted")
    images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    features, _ = jax.jit(lambda variables, x: model.apply(variables, x, train=False))(
        {"params": state.params, "batch_stats": state.batch_stats}, images
    )
    with torch.no_grad():
        expected = torch_model.features(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    assert np.abs(expected).max() > 0.1  # features of a working network, not all zeros
    np.testing.assert_allclose(np.asarray(features), expected, rtol=1e-4, atol=1e-4)


@requires_torch
def test_head_and_simnet_start_fresh(tmp_path):
    torch.save(_torch_model("resnet18").state_dict(), tmp_path / "r18.pth")
    convert.convert_checkpoint("torchvision_resnet18", tmp_path / "r18.pth", tmp_path / "out")
    _, loaded = _pretrained_state("resnet18", 32, tmp_path / "out")
    _, fresh = _pretrained_state("resnet18", 32, None)
    for part in ("head",):
        jax.tree.map(
            np.testing.assert_array_equal,
            loaded.params["classifier"][part],
            fresh.params["classifier"][part],
        )
    jax.tree.map(np.testing.assert_array_equal, loaded.params["simnet"], fresh.params["simnet"])
    jax.tree.map(
        np.testing.assert_array_equal, loaded.batch_stats["simnet"], fresh.batch_stats["simnet"]
    )
    kernel = ("classifier", "backbone", "ResNet_0", "conv_init", "kernel")
    got = loaded.params
    for name in kernel:
        got = got[name]
    np.testing.assert_array_equal(
        np.asarray(got),
        _torch_model("resnet18").conv1.weight.detach().numpy().transpose(2, 3, 1, 0),
    )


@requires_torch
@pytest.mark.parametrize(
    ("config_name", "source"),
    [
        ("resnet50_raf", "evolve_ir50"),
        ("resnet18_raf", "msceleb_resnet18"),
        ("resnet18_affectnet", "msceleb_resnet18"),
    ],
)
def test_full_size_file_fits_the_real_config(config_name, source):
    """Every array of the full-size network lands on the config's backbone at its input size."""
    config = importlib.import_module(f"configs.{config_name}").get_config()
    torch.manual_seed(0)
    full = IRBackbone() if source == "evolve_ir50" else ResNet(BasicBlock, (2, 2, 2, 2))
    state_dict = {key: value.numpy() for key, value in full.state_dict().items()}
    converted, dropped = convert.convert_state_dict(state_dict, source)
    assert all(key.endswith("num_batches_tracked") or key.startswith("fc.") for key in dropped)
    model = models.create_model(config)
    size = config.input_size
    variables = jax.eval_shape(
        lambda: model.init(
            jax.random.PRNGKey(0),
            jnp.zeros((1, size, size, 3)),
            config.num_neighbors,
            method=models.LDLVA.initialize,
        )
    )
    pretrained.check_backbone(  # raises on any missing, extra or mis-shaped array
        pretrained.get_backbone(variables),
        converted,
        source=source,
        backbone_name=config.model.backbone,
    )
    if source == "evolve_ir50":  # the channels-first flatten of the 7x7x512 map at 112
        assert converted["params"]["embedding"]["kernel"].shape == (512 * 7 * 7, 512)


@requires_torch
def test_resnet18_file_converted_as_resnet50_names_the_missing_arrays(tmp_path):
    torch.save(_torch_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(pretrained.PretrainedMismatchError) as error:
        convert.convert_checkpoint("torchvision_resnet50", tmp_path / "r18.pth", tmp_path / "out")
    message = str(error.value)
    assert "batch_stats/ResNet_0/BottleneckResNetBlock_0/BatchNorm_0/mean: missing" in message
    assert "batch_stats/ResNet_0/ResNetBlock_0/BatchNorm_0/mean: unexpected (shape (64,)" in message
    assert not (tmp_path / "out").exists()  # nothing written


@requires_torch
def test_command_line_writes_a_loadable_folder(tmp_path):
    torch.save(_torch_model("ir_tiny").state_dict(), tmp_path / "ir.pth")
    out = tmp_path / "ir_tiny"
    command = [
        sys.executable,
        "-m",
        "ldl_jax.convert",
        "--from=evolve_ir50",
        f"--in={tmp_path / 'ir.pth'}",
        f"--out={out}",
        "--backbone=ir_tiny",
    ]
    repo = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["backbone"] == "ir_tiny" and printed["source"] == "evolve_ir50"
    assert json.loads((out / pretrained.METADATA_FILE).read_text())["backbone"] == "ir_tiny"
    name, _ = pretrained.read_converted(out)
    assert name == "ir_tiny"


@requires_torch
def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(convert.ConversionError, match="list.pth: expected a state_dict"):
        convert.read_state_dict(tmp_path / "list.pth")


# --------------------------------------------------------------------------------------------
# Key mapping on numpy state_dicts (no torch needed).


def _numpy_ir_tiny_state_dict():
    """An IR-tiny state_dict in face.evoLVe's names, made from our own initialised model."""
    shapes = {
        "input_layer.0.weight": (8, 3, 3, 3),
        "input_layer.2.weight": (8,),
        "body.0.res_layer.1.weight": (8, 8, 3, 3),
        "body.0.res_layer.2.weight": (8,),
        "body.0.res_layer.3.weight": (8, 8, 3, 3),
        "body.1.shortcut_layer.0.weight": (16, 8, 1, 1),
        "body.1.res_layer.1.weight": (16, 8, 3, 3),
        "body.1.res_layer.2.weight": (16,),
        "body.1.res_layer.3.weight": (16, 16, 3, 3),
        "output_layer.3.weight": (32, 256),
        "output_layer.3.bias": (32,),
    }
    norms = {
        "input_layer.1": 8,
        "body.0.res_layer.0": 8,
        "body.0.res_layer.4": 8,
        "body.1.shortcut_layer.1": 16,
        "body.1.res_layer.0": 8,
        "body.1.res_layer.4": 16,
        "output_layer.0": 16,
        "output_layer.4": 32,
    }
    for module, size in norms.items():
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{module}.{name}"] = (size,)
        shapes[f"{module}.num_batches_tracked"] = ()
    rng = np.random.default_rng(0)
    return {key: rng.normal(size=shape).astype(np.float32) for key, shape in shapes.items()}


def test_numpy_ir_state_dict_maps_onto_ir_tiny():
    converted, _ = convert.convert_state_dict(_numpy_ir_tiny_state_dict(), "evolve_ir50")
    pretrained.check_backbone(
        convert.expected_backbone("ir_tiny", converted),
        converted,
        source="numpy",
        backbone_name="ir_tiny",
    )


def test_unknown_torch_key_is_named():
    state_dict = _numpy_ir_tiny_state_dict()
    state_dict["body.0.res_layer.5.fc1.weight"] = np.zeros((1, 8, 1, 1), np.float32)  # IR-SE
    with pytest.raises(convert.ConversionError, match=r"body\.0\.res_layer\.5\.fc1\.weight"):
        convert.convert_state_dict(state_dict, "evolve_ir50")


def test_wrong_source_is_reported_with_the_first_foreign_key():
    state_dict = {"module.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}
    with pytest.raises(convert.ConversionError, match=r"conv1\.weight: not a parameter"):
        convert.convert_state_dict(state_dict, "evolve_ir50")


def test_conv_weight_of_wrong_rank_is_named():
    state_dict = _numpy_ir_tiny_state_dict()
    state_dict["input_layer.0.weight"] = np.zeros((8, 27), np.float32)
    with pytest.raises(convert.ConversionError, match=r"input_layer\.0\.weight.*4-D"):
        convert.convert_state_dict(state_dict, "evolve_ir50")


def test_mis_shaped_array_names_the_key_and_both_shapes():
    state_dict = _numpy_ir_tiny_state_dict()
    state_dict["body.1.res_layer.3.weight"] = np.zeros((16, 16, 5, 5), np.float32)
    converted, _ = convert.convert_state_dict(state_dict, "evolve_ir50")
    with pytest.raises(pretrained.PretrainedMismatchError) as error:
        pretrained.check_backbone(
            convert.expected_backbone("ir_tiny", converted),
            converted,
            source="file.pth",
            backbone_name="ir_tiny",
        )
    message = str(error.value)
    assert "file.pth does not fit config.model.backbone='ir_tiny'" in message
    assert (
        "params/BottleneckIR_1/Conv_1/kernel: shape (5, 5, 16, 16) in the file, "
        "(3, 3, 16, 16) in the ir_tiny backbone" in message
    )


def test_batch_norm_without_affine_parameters_gets_unit_scale():
    state_dict = _numpy_ir_tiny_state_dict()
    del state_dict["output_layer.4.weight"], state_dict["output_layer.4.bias"]
    converted, _ = convert.convert_state_dict(state_dict, "evolve_ir50")
    np.testing.assert_array_equal(converted["params"]["bn_embedding"]["scale"], np.ones(32))
    np.testing.assert_array_equal(converted["params"]["bn_embedding"]["bias"], np.zeros(32))


def test_resnet_blocks_are_numbered_over_the_whole_trunk():
    mapping = convert.torchvision_resnet_mapping(
        ["layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"]
    )
    assert mapping("layer2.0.conv1") == (("ResNet_0", "ResNetBlock_2", "Conv_0"), "conv")
    assert mapping("layer2.0.downsample.1") == (("ResNet_0", "ResNetBlock_2", "norm_proj"), "bn")
    assert mapping("layer9.fc") is None
