"""Converted backbone folders, and fitting a stored backbone into a fresh model.

`config.model.pretrained` names a converted backbone folder (this module) or another run's
workdir (`ldl_jax.inference.read_workdir_backbone`); `ldl_jax.inference.load_pretrained_backbone`
reads either and merges it here (`merge_backbone`). A converted folder, written by
`python -m ldl_jax.convert` from a PyTorch checkpoint:

    backbone.json     {"format": 1, "backbone": "ir50", "source": "evolve_ir50", "input": "..."}
    backbone.msgpack  `flax.serialization.msgpack_serialize` of {"params": ..., "batch_stats": ...},
                      the float32 variables of the model's `classifier/backbone` submodule in
                      ldl_jax's layout (HWIO kernels, BatchNorm running statistics).

Only the backbone is loaded; the classifier head and AdaptiveSimNet keep their fresh
initialisation. Every key and shape is checked first: a missing, unexpected or mis-shaped array
is an error that names it. Nothing here imports torch (only `ldl_jax.convert` does).
"""

import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

FORMAT_VERSION = 1
METADATA_FILE = "backbone.json"
VARIABLES_FILE = "backbone.msgpack"
COLLECTIONS = ("params", "batch_stats")
# Where the backbone sits in the variables of `models.LDLVA`.
BACKBONE_SCOPE = ("classifier", "backbone")

# Backbones that start from a smaller pretrained one: (its name, submodules that start fresh).
# The fork's multi-channel ResNet-50 takes the ImageNet ResNet-50 trunk.
COMPATIBLE_BACKBONES = {"resnet50_multichannel": ("resnet50", ("MultiChannelHead_0",))}


class PretrainedMismatchError(ValueError):
    """Pretrained variables that do not fit the configured backbone."""


def get_backbone(variables: Mapping[str, Any]) -> dict[str, Any]:
    """{'params', 'batch_stats'} of the backbone submodule of LDLVA `variables`."""
    backbone = {}
    for collection in COLLECTIONS:
        tree = variables[collection]
        for name in BACKBONE_SCOPE:
            tree = tree[name]
        backbone[collection] = tree
    return backbone


def replace_backbone(variables: Mapping[str, Any], backbone: Mapping[str, Any]) -> dict:
    """LDLVA `variables` with the backbone submodule's collections replaced by `backbone`."""
    out = dict(variables)
    for collection in COLLECTIONS:
        flat = traverse_util.flatten_dict(flax.core.unfreeze(variables[collection]))
        flat = {key: value for key, value in flat.items() if key[:2] != BACKBONE_SCOPE}
        for key, value in traverse_util.flatten_dict(dict(backbone[collection])).items():
            flat[BACKBONE_SCOPE + key] = value
        out[collection] = traverse_util.unflatten_dict(flat)
    return out


def _flat(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """'collection/module/.../leaf' -> array."""
    return {
        "/".join((collection, *key)): value
        for collection in COLLECTIONS
        for key, value in traverse_util.flatten_dict(dict(backbone.get(collection, {}))).items()
    }


def check_backbone(
    expected: Mapping[str, Any],
    loaded: Mapping[str, Any],
    *,
    source: str,
    backbone_name: str,
    fresh_modules: Iterable[str] = (),
) -> None:
    """Raises PretrainedMismatchError unless `loaded` has exactly the keys and shapes expected.

    Args:
      expected: {'params', 'batch_stats'} of the configured backbone (arrays or shape structs).
      loaded: the same from `source`.
      source: where `loaded` comes from, for the message.
      backbone_name: the configured backbone, for the message.
      fresh_modules: top-level submodules of the backbone that may be absent from `loaded`.
    """
    want, have = _flat(expected), _flat(loaded)
    fresh = tuple(fresh_modules)

    def is_fresh(key):
        return key.split("/")[1] in fresh

    missing = [
        f"{key}: missing (the {backbone_name} backbone has it with shape {tuple(want[key].shape)})"
        for key in sorted(want.keys() - have.keys())
        if not is_fresh(key)
    ]
    unexpected = [
        f"{key}: unexpected (shape {tuple(np.shape(have[key]))}; the {backbone_name} "
        f"backbone has no such variable)"
        for key in sorted(have.keys() - want.keys())
    ]
    mismatched = [
        f"{key}: shape {tuple(np.shape(have[key]))} in the file, "
        f"{tuple(want[key].shape)} in the {backbone_name} backbone"
        for key in sorted(want.keys() & have.keys())
        if tuple(np.shape(have[key])) != tuple(want[key].shape)
    ]
    if missing or unexpected or mismatched:
        lines = []
        for problems in (mismatched, missing, unexpected):
            lines += problems[:5]
            if len(problems) > 5:
                lines.append(f"... and {len(problems) - 5} more like it")
        shown = "\n  ".join(lines)
        raise PretrainedMismatchError(
            f"{source} does not fit config.model.backbone={backbone_name!r} ({len(mismatched)} "
            f"mis-shaped, {len(missing)} missing, {len(unexpected)} unexpected arrays):\n  {shown}"
        )


# --------------------------------------------------------------------------------------------
# Converted backbone folders.


def save_backbone(out, backbone_name: str, backbone: Mapping[str, Any], **info) -> pathlib.Path:
    """Writes a converted backbone folder (`backbone.json` and `backbone.msgpack`) to `out`.

    `info` (e.g. source, input file) is recorded in backbone.json. Refuses to overwrite.
    """
    out = pathlib.Path(out)
    if (out / METADATA_FILE).exists() or (out / VARIABLES_FILE).exists():
        raise FileExistsError(f"{out} already holds a converted backbone; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    arrays = {
        collection: jax.tree.map(
            lambda x: np.asarray(x, np.float32), dict(backbone.get(collection, {}))
        )
        for collection in COLLECTIONS
    }
    (out / VARIABLES_FILE).write_bytes(flax.serialization.msgpack_serialize(arrays))
    metadata = {
        "format": FORMAT_VERSION,
        "backbone": backbone_name,
        **info,
        "num_arrays": len(_flat(arrays)),
        "num_parameters": int(sum(np.size(x) for x in jax.tree.leaves(arrays["params"]))),
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out


def read_converted(path) -> tuple[str, dict[str, Any]]:
    """(backbone name, {'params', 'batch_stats'}) of a converted backbone folder."""
    path = pathlib.Path(path)
    metadata_path, variables_path = path / METADATA_FILE, path / VARIABLES_FILE
    for file in (metadata_path, variables_path):
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} does not exist: {path} is not a folder written by ldl_jax.convert"
            )
    try:
        metadata = json.loads(metadata_path.read_text())
        backbone_name = metadata["backbone"]
        version = metadata["format"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"{metadata_path}: not a backbone description ({error!r}); expected JSON with "
            f"'format' and 'backbone'"
        ) from error
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{metadata_path}: format {version!r}, this ldl_jax reads {FORMAT_VERSION}"
        )
    try:
        variables = flax.serialization.msgpack_restore(variables_path.read_bytes())
    except Exception as error:  # msgpack raises several types on corrupt input
        raise ValueError(f"{variables_path}: cannot be read ({error!r})") from error
    if not isinstance(variables, dict) or set(variables) - set(COLLECTIONS):
        raise ValueError(
            f"{variables_path}: expected a map with {list(COLLECTIONS)}, got "
            f"{sorted(variables) if isinstance(variables, dict) else type(variables).__name__}"
        )
    return backbone_name, {collection: variables.get(collection, {}) for collection in COLLECTIONS}


def merge_backbone(
    variables: Mapping[str, Any],
    stored_name: str,
    loaded: Mapping[str, Any],
    source: str,
    backbone_name: str,
) -> dict:
    """LDLVA `variables` with the backbone replaced by `loaded`, a stored `stored_name` one.

    Args:
      variables: freshly initialised {'params', 'batch_stats'} of the whole model.
      stored_name: the backbone the stored variables belong to.
      loaded: the stored backbone's {'params', 'batch_stats'}.
      source: where they were read (for the messages).
      backbone_name: `config.model.backbone`.

    Returns:
      The variables with the backbone's params and BatchNorm statistics from `loaded`, the
      head and AdaptiveSimNet untouched.

    Raises:
      PretrainedMismatchError: another backbone, or a key is missing, unexpected or of another
        shape (each named with both shapes).
    """
    allowed_name, fresh_modules = COMPATIBLE_BACKBONES.get(backbone_name, (backbone_name, ()))
    if stored_name not in (backbone_name, allowed_name):
        raise PretrainedMismatchError(
            f"{source} holds a {stored_name!r} backbone, config.model.backbone is {backbone_name!r}"
        )
    current = get_backbone(variables)
    check_backbone(
        current,
        loaded,
        source=source,
        backbone_name=backbone_name,
        fresh_modules=fresh_modules if stored_name != backbone_name else (),
    )
    merged = {}
    for collection in COLLECTIONS:
        flat = traverse_util.flatten_dict(dict(current[collection]))
        new = traverse_util.flatten_dict(dict(loaded[collection]))
        merged[collection] = traverse_util.unflatten_dict(
            {
                key: jnp.asarray(np.asarray(new[key]), value.dtype) if key in new else value
                for key, value in flat.items()
            }
        )
    return replace_backbone(variables, merged)
