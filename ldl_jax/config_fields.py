"""The config fields that may be missing, their defaults, and every field's allowed values.

A config reaches the code from a config file (`configs/`, complete), from a workdir's saved
`config.json` (written by whatever version trained it, so it may predate a field) or from a
checkpoint's signature. `complete(config)` fills each missing field once, when the config is
read, with the value that reproduces how runs behaved before the field existed; past that point
the code reads fields directly and never guesses a default. The allowed values live here too,
so the checks (`ldl_jax.config_checks`) sit below the modules that use them.
"""

from typing import Any

import ml_collections

# config.task: LDLVA classification, or the valence/arousal regressor that annotates data sets
# without VA labels (ldl_jax/tasks.py).
LDL = "ldl"
VA = "va"
TASKS = (LDL, VA)

DTYPES = ("float32", "bfloat16")
PARALLEL_MODES = ("mesh", "pmap")
# config.data.placement (ldl_jax/data/feeds.py).
PLACEMENTS = ("auto", "device", "host")
# config.neighbors: the backbone runs on the neighbour images every step, or reads them from a
# bank of each row's last central pass (ldl_jax/memory_bank.py).
FORWARD = "forward"
MEMORY_BANK = "memory_bank"
NEIGHBOR_MODES = (FORWARD, MEMORY_BANK)
NEIGHBOR_DISTRIBUTIONS = ("prediction", "label")  # config.neighbor_distribution (ldl.py)
LAMB_CLASS_MEANS = ("lamb_init", "consensus")  # config.lamb_class_mean (steps.py)
LOSSES = ("cross_entropy", "gce")  # config.loss (ldl.py)
VA_LOSSES = ("mse", "ccc")  # config.va_loss (va_model.py)

# Dotted field -> its value in configs written before the field existed.
DEFAULTS_FOR_MISSING: dict[str, Any] = {
    "task": LDL,
    "va_loss": "ccc",
    "neighbors": FORWARD,
    "neighbor_distribution": "prediction",
    "lamb_fixed_class_mean": False,
    "lamb_class_mean": "lamb_init",
    "prior_correction": False,
    "label_smoothing": 0.0,
    "loss": "cross_entropy",
    "gce_q": 0.7,
    "eval_sets": {},
    "model.pretrained": "",
    "data.placement": "auto",
    "data.synthetic": None,
}
# Fields of an optional group, filled only where the group is set.
GROUP_DEFAULTS_FOR_MISSING: dict[str, dict[str, Any]] = {
    "data.synthetic": {"class_balance": "default"},
}


def _node(config, dotted: str):
    """(parent ConfigDict or None where a parent group is absent, leaf name) of a field."""
    *parents, leaf = dotted.split(".")
    node = config
    for parent in parents:
        if parent not in node:
            return None, leaf
        node = node[parent]
    return node, leaf


def complete(config) -> ml_collections.ConfigDict:
    """A copy of `config` with every field of DEFAULTS_FOR_MISSING it lacks filled in.

    Only the groups `config` has are filled: a model rebuilt from a checkpoint's signature has
    no `data` group, and gets none.
    """
    filled = ml_collections.ConfigDict(config.to_dict())
    for dotted, value in DEFAULTS_FOR_MISSING.items():
        node, leaf = _node(filled, dotted)
        if node is not None and leaf not in node:
            node[leaf] = value
    for dotted, defaults in GROUP_DEFAULTS_FOR_MISSING.items():
        node, leaf = _node(filled, dotted)
        if node is not None and node.get(leaf) is not None:
            for name, value in defaults.items():
                if name not in node[leaf]:
                    node[leaf][name] = value
    return filled


def uses_memory_bank(config) -> bool:
    """Whether the train state holds the neighbour memory bank (config.neighbors)."""
    return config.neighbors == MEMORY_BANK
