"""Converts a pretrained PyTorch backbone into a folder that `config.model.pretrained` loads.

  python -m ldl_jax.convert --from=evolve_ir50 --in=backbone_ir50_ms1m_epoch120.pth \\
      --out=pretrained/ir50_ms1m
  python -m ldl_jax.convert --from=msceleb_resnet18 --in=resnet18_msceleb.pth \\
      --out=pretrained/resnet18_msceleb
  python -m ldl_jax.convert --from=torchvision_resnet50 --in=resnet50-0676ba61.pth \\
      --out=pretrained/resnet50_imagenet

Sources (`--from`) and the backbone each becomes:

- `evolve_ir50` -> `ir50`: face.evoLVe's IR-50 `Backbone` state_dict (`input_layer.*`,
  `body.N.res_layer.*`, `body.N.shortcut_layer.*`, `output_layer.*`). Its output Linear reads
  the last map flattened channels-first, which `backbones.IResNet` reproduces, so the kernel is
  only transposed.
- `msceleb_resnet18` -> `resnet18`: the MS-Celeb-1M ResNet-18 of SCN/RUL/DAN, a torchvision
  ResNet-18 state_dict under a `state_dict` key (the face-identity `fc.*`/`feature.*` layers
  are dropped).
- `torchvision_resnet18` -> `resnet18`, `torchvision_resnet50` -> `resnet50`: torchvision
  ImageNet state_dicts (`fc.*` dropped).

A `module.` prefix (DataParallel) is stripped everywhere. Conv kernels go from OIHW to HWIO,
Linear kernels are transposed, BatchNorm weight/bias/running_mean/running_var become
scale/bias/mean/var (`num_batches_tracked` is dropped), PReLU weights become `slope`. The
result is checked against the flax backbone before anything is written: any key the mapping
does not know, and any missing or mis-shaped array, is an error naming it. The output format
is described in `ldl_jax.pretrained`.

torch is imported only to read the .pth file; nothing else in ldl_jax needs it.
"""

import json
import pathlib
import re
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ldl_jax import backbones, console, pretrained

FLAGS = flags.FLAGS

# A module path in ldl_jax's backbone and the kind of layer it is.
ModuleRef = tuple[tuple[str, ...], str]

# torch parameter or buffer name -> (collection, flax name) per kind of layer. None: dropped.
_LEAVES = {
    "conv": {"weight": ("params", "kernel")},
    "linear": {"weight": ("params", "kernel"), "bias": ("params", "bias")},
    "prelu": {"weight": ("params", "slope")},
    "bn": {
        "weight": ("params", "scale"),
        "bias": ("params", "bias"),
        "running_mean": ("batch_stats", "mean"),
        "running_var": ("batch_stats", "var"),
        "num_batches_tracked": None,
    },
}


class ConversionError(ValueError):
    """A checkpoint that does not match the layout of its `--from` source."""


# --------------------------------------------------------------------------------------------
# Key mappings: torch module path -> ldl_jax module path and layer kind (None: not known).

_EVOLVE_FIXED = {
    "input_layer.0": (("conv_init",), "conv"),
    "input_layer.1": (("bn_init",), "bn"),
    "input_layer.2": (("PReLU_0",), "prelu"),
    "output_layer.0": (("bn_output",), "bn"),
    "output_layer.3": (("embedding",), "linear"),
    "output_layer.4": (("bn_embedding",), "bn"),
}
_EVOLVE_UNIT = {
    # res_layer: BN, Conv3x3, PReLU, Conv3x3(stride), BN
    ("res_layer", "0"): ("BatchNorm_0", "bn"),
    ("res_layer", "1"): ("Conv_0", "conv"),
    ("res_layer", "2"): ("PReLU_0", "prelu"),
    ("res_layer", "3"): ("Conv_1", "conv"),
    ("res_layer", "4"): ("BatchNorm_1", "bn"),
    # shortcut_layer: Conv1x1(stride), BN (MaxPool2d(1, stride) has no weights)
    ("shortcut_layer", "0"): ("conv_proj", "conv"),
    ("shortcut_layer", "1"): ("norm_proj", "bn"),
}


def evolve_ir_mapping(module_names) -> Callable[[str], ModuleRef | None]:
    """face.evoLVe IR Backbone modules -> `backbones.IResNet` modules."""
    del module_names  # body.N is numbered as ldl_jax numbers its units

    def mapping(module: str) -> ModuleRef | None:
        if module in _EVOLVE_FIXED:
            return _EVOLVE_FIXED[module]
        match = re.fullmatch(r"body\.(\d+)\.(res_layer|shortcut_layer)\.(\d+)", module)
        if match and (match[2], match[3]) in _EVOLVE_UNIT:
            name, kind = _EVOLVE_UNIT[(match[2], match[3])]
            return (f"BottleneckIR_{match[1]}", name), kind
        return None

    return mapping


def torchvision_resnet_mapping(module_names) -> Callable[[str], ModuleRef | None]:
    """torchvision ResNet modules -> `backbones.PooledResNet` (trunk `ResNet_0`) modules.

    torchvision numbers blocks per stage (`layer2.1`), ldl_jax over the whole trunk
    (`ResNetBlock_3`); a block with `conv3` is a bottleneck.
    """
    blocks_per_stage: dict[int, int] = {}
    bottleneck = False
    for module in module_names:
        match = re.match(r"layer(\d+)\.(\d+)\.", module)
        if match:
            stage, block = int(match[1]), int(match[2])
            blocks_per_stage[stage] = max(blocks_per_stage.get(stage, 0), block + 1)
            bottleneck |= module.endswith(".conv3")
    offsets, total = {}, 0
    for stage in sorted(blocks_per_stage):
        offsets[stage] = total
        total += blocks_per_stage[stage]
    block_cls = "BottleneckResNetBlock" if bottleneck else "ResNetBlock"
    trunk = "ResNet_0"

    def mapping(module: str) -> ModuleRef | None:
        if module == "conv1":
            return (trunk, "conv_init"), "conv"
        if module == "bn1":
            return (trunk, "bn_init"), "bn"
        match = re.fullmatch(r"layer(\d+)\.(\d+)\.(conv|bn)(\d)", module)
        if match:
            block = f"{block_cls}_{offsets[int(match[1])] + int(match[2])}"
            index = int(match[4]) - 1
            if match[3] == "conv":
                return (trunk, block, f"Conv_{index}"), "conv"
            return (trunk, block, f"BatchNorm_{index}"), "bn"
        match = re.fullmatch(r"layer(\d+)\.(\d+)\.downsample\.([01])", module)
        if match:
            block = f"{block_cls}_{offsets[int(match[1])] + int(match[2])}"
            if match[3] == "0":
                return (trunk, block, "conv_proj"), "conv"
            return (trunk, block, "norm_proj"), "bn"
        return None

    return mapping


# name -> (ldl_jax backbone, module mapping, torch modules dropped on purpose: heads)
SOURCES = {
    "evolve_ir50": ("ir50", evolve_ir_mapping, ()),
    "msceleb_resnet18": ("resnet18", torchvision_resnet_mapping, ("fc", "feature")),
    "torchvision_resnet18": ("resnet18", torchvision_resnet_mapping, ("fc",)),
    "torchvision_resnet50": ("resnet50", torchvision_resnet_mapping, ("fc",)),
}


# --------------------------------------------------------------------------------------------
# Conversion (numpy in, numpy out: no torch needed).


def _convert_leaf(kind: str, name: str, value: np.ndarray, key: str) -> np.ndarray:
    if kind == "conv" and name == "weight":
        if value.ndim != 4:
            raise ConversionError(f"{key}: a convolution weight must be 4-D, got {value.shape}")
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if kind == "linear" and name == "weight":
        if value.ndim != 2:
            raise ConversionError(f"{key}: a Linear weight must be 2-D, got {value.shape}")
        return value.T
    return value


def strip_module_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops DataParallel's `module.` prefix from every key that has it."""
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray], source: str
) -> tuple[dict[str, dict], list[str]]:
    """Maps a PyTorch state_dict (numpy values) of `source` to ldl_jax's backbone layout.

    Returns:
      ({'params': ..., 'batch_stats': ...} nested by module, the torch keys dropped on purpose).

    Raises:
      ConversionError: a key the source's layout does not have, or a weight of the wrong rank.
    """
    if source not in SOURCES:
        raise ValueError(f"--from={source!r} is not one of {sorted(SOURCES)}")
    _, make_mapping, head_modules = SOURCES[source]
    state_dict = strip_module_prefix(state_dict)
    module_names = sorted({key.rpartition(".")[0] for key in state_dict})
    mapping = make_mapping(module_names)
    variables: dict[str, dict] = {collection: {} for collection in pretrained.COLLECTIONS}
    norms: dict[tuple[str, ...], str] = {}
    dropped = []
    for key in sorted(state_dict):
        module, _, name = key.rpartition(".")
        if module.split(".")[0] in head_modules:
            dropped.append(key)
            continue
        target = mapping(module)
        if target is None or name not in _LEAVES[target[1]]:
            raise ConversionError(
                f"{key}: not a parameter of a {source} checkpoint (is --from right? "
                f"{source} keys look like {_example_keys(source)})"
            )
        path, kind = target
        leaf = _LEAVES[kind][name]
        if leaf is None:
            dropped.append(key)
            continue
        collection, flax_name = leaf
        value = _convert_leaf(kind, name, np.asarray(state_dict[key], np.float32), key)
        tree = variables[collection]
        for part in path:
            tree = tree.setdefault(part, {})
        tree[flax_name] = value
        if kind == "bn":
            norms[path] = key.rpartition(".")[0]
    # BatchNorm without affine parameters (affine=False) is BatchNorm with scale 1 and bias 0.
    for path in norms:
        tree = variables["params"]
        for part in path:
            tree = tree.setdefault(part, {})
        mean = _lookup(variables["batch_stats"], path).get("mean")
        if mean is not None:
            tree.setdefault("scale", np.ones_like(mean))
            tree.setdefault("bias", np.zeros_like(mean))
    return variables, dropped


def _lookup(tree, path):
    for part in path:
        tree = tree.get(part, {})
    return tree


def _example_keys(source: str) -> str:
    if source == "evolve_ir50":
        return "input_layer.0.weight, body.0.res_layer.1.weight, output_layer.3.weight"
    return "conv1.weight, layer1.0.conv1.weight, layer2.0.downsample.0.weight"


def expected_backbone(backbone_name: str, converted: Mapping[str, dict]) -> dict:
    """Shapes of `backbone_name`'s variables, at the input size the converted weights imply.

    Only IR networks depend on the input size (their output Linear reads the flattened map):
    it is inferred from that Linear; ResNets are pooled, any size gives the same shapes.
    """
    if backbone_name not in backbones.BACKBONES:
        names = sorted(backbones.BACKBONES)
        raise ValueError(f"--backbone={backbone_name!r} is not one of {names}")
    constructor, _ = backbones.BACKBONES[backbone_name]
    module = constructor()
    size = 32
    if isinstance(module, backbones.IResNet):
        params = converted["params"]
        try:
            flat_size = params["embedding"]["kernel"].shape[0]
            channels = params["bn_output"]["scale"].shape[0]
        except KeyError as error:
            raise ConversionError(f"the file has no IR output layer ({error} missing)") from error
        side = int(round((flat_size / channels) ** 0.5))
        size = side * 2 ** len(module.stage_sizes)
    return jax.eval_shape(
        lambda: module.init(
            {"params": jax.random.PRNGKey(0)}, jnp.zeros((1, size, size, 3)), train=False
        )
    )


# --------------------------------------------------------------------------------------------
# Reading .pth files (the only place torch is used).


def read_state_dict(path, *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """The state_dict of a .pth file as numpy arrays; unwraps a `state_dict` key.

    Loads with `weights_only=True` (no arbitrary code) unless `trust_pickle`.
    """
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        import torch  # only the converter needs torch: imported here, never at module level
    except ImportError as error:
        raise ImportError(
            "ldl_jax.convert needs PyTorch to read .pth files: pip install torch "
            "(the CPU build is enough; see the README, 'Pretrained backbones')"
        ) from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:
        hint = "" if trust_pickle else " (if you trust the file, retry with --trust_pickle)"
        raise ConversionError(f"{path}: torch.load failed: {error}{hint}") from error
    if isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(
            f"{path}: expected a state_dict (a map of names to tensors), got "
            f"{type(checkpoint).__name__}"
        )
    state_dict = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"{path}: {key!r} is a {type(value).__name__}, not a tensor: not a state_dict"
            )
        state_dict[key] = value.detach().to(torch.float32).numpy()
    return state_dict


def convert_checkpoint(
    source: str, in_path, out, *, backbone_name: str | None = None, trust_pickle: bool = False
) -> dict:
    """Reads `in_path`, converts it for `backbone_name` (default: the source's) into `out`.

    Returns the written backbone.json as a dict.
    """
    if source not in SOURCES:
        raise ValueError(f"--from={source!r} is not one of {sorted(SOURCES)}")
    backbone_name = backbone_name or SOURCES[source][0]
    converted, dropped = convert_state_dict(
        read_state_dict(in_path, trust_pickle=trust_pickle), source
    )
    pretrained.check_backbone(
        expected_backbone(backbone_name, converted),
        converted,
        source=f"{in_path} (converted from {source})",
        backbone_name=backbone_name,
    )
    out_dir = pretrained.save_backbone(
        out, backbone_name, converted, source=source, input=str(in_path), dropped=dropped
    )
    return json.loads((out_dir / pretrained.METADATA_FILE).read_text())


def define_flags():
    """Command-line flags, defined only when run as a program (modules import cleanly)."""
    flags.DEFINE_enum("from", None, sorted(SOURCES), "What the .pth file holds.")
    flags.DEFINE_string("in", None, "The PyTorch checkpoint (.pth).")
    flags.DEFINE_string("out", None, "Folder to write (must not hold a converted backbone).")
    flags.DEFINE_string(
        "backbone",
        None,
        "ldl_jax backbone to convert for; default the source's (ir50, resnet18, resnet50).",
    )
    flags.DEFINE_bool(
        "trust_pickle",
        False,
        "Load with torch.load(weights_only=False): runs the file's pickled code; only for "
        "files from a source you trust that weights_only cannot read.",
    )
    flags.mark_flags_as_required(["from", "in", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with console.input_errors_end_the_command():
        metadata = convert_checkpoint(
            FLAGS["from"].value,
            FLAGS["in"].value,
            FLAGS.out,
            backbone_name=FLAGS.backbone,
            trust_pickle=FLAGS.trust_pickle,
        )
    print(json.dumps({"out": FLAGS.out, **metadata}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
