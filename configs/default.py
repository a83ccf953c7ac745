"""Base config: the reference's RAF-DB IR-50 settings (docs/METHOD.md §4); variants override
fields.

Every field can be overridden on the command line, e.g. `--config.batch_size=64`.
"""

import ml_collections

# The method as the reference repository runs it, and with ldl_jax's deviations from it
# (docs/METHOD.md §3). Every shipped config runs the reference unless its argument names
# another variant (`--config=configs/NAME.py:ldl_jax`); a deviation becomes a default only
# where it wins the confirmation protocol of docs/EXPERIMENTS.md.
METHOD_VARIANTS = {
    "reference": {
        # theta free per row, as the reference.
        "lamb_fixed_class_mean": False,
        "lamb_class_mean": "lamb_init",
        # q: the neighbours' predictions.
        "neighbor_distribution": "prediction",
        # The logits as trained.
        "prior_correction": False,
    },
    "ldl_jax": {
        # After every theta step, each class's theta is shifted so that its mean stays where
        # `lamb_class_mean` puts it: lambda moves trust between the rows of a class but never
        # takes it from a whole class ("Beyond the reference: each class keeps its mean lambda").
        "lamb_fixed_class_mean": True,
        # lamb_init for the class whose rows' VA neighbours agree most on one label, moving
        # toward lambda = 1 as a class's neighbourhoods agree less ('lamb_init': every class at
        # lamb_init).
        "lamb_class_mean": "consensus",
        # Each VA neighbour brings its label with weight lambda_j and its prediction for the
        # rest ('prediction': its prediction alone).
        "neighbor_distribution": "label",
        # Evaluation, inference and export shift the logits by log(label marginal) -
        # log(target marginal), running averages over the train batches, giving each class
        # back the share of its labels that the label distributions moved to other classes.
        "prior_correction": True,
    },
}
DEFAULT_VARIANT = "reference"


def get_config(variant: str = DEFAULT_VARIANT):
    """The base config running the method's `variant` (a key of METHOD_VARIANTS)."""
    if variant not in METHOD_VARIANTS:
        raise ValueError(
            f"unknown method variant {variant!r}: use one of {sorted(METHOD_VARIANTS)}"
        )
    config = ml_collections.ConfigDict()
    config.seed = 0
    # 'ldl' trains LDLVA; 'va' a valence/arousal regressor for data sets without VA labels (then
    # `python -m ldl_jax.annotate_va`). Both run in ldl_jax/train.py (ldl_jax/tasks.py).
    config.task = "ldl"
    config.va_loss = "ccc"  # task 'va': 'ccc' (1 - CCC, mean of both dimensions) or 'mse'

    # Data (docs/METHOD.md §1). Paths are relative to the working directory or absolute.
    config.data = ml_collections.ConfigDict()
    config.data.image_dir = ""  # root the CSVs' subDirectory_filePath is relative to
    config.data.train_csv = ""
    config.data.val_csv = ""  # optional: evaluated every val_interval steps
    config.data.test_csv = ""  # evaluated at the end of training and by --mode=eval
    # More named test sets for --mode=eval, e.g. occluded or original (unaligned) variants:
    # config.eval_sets = {"occluded": {"csv": "...", "image_dir": "..."}} in a config file.
    config.eval_sets = ml_collections.ConfigDict()
    config.data.va_bandwidth = 0.5
    config.data.max_in_memory_gb = 8.0  # larger decoded sets go to a memmap in the workdir
    # Where the decoded training images live (ldl_jax/data/feeds.py): 'device' (on the
    # accelerators, gathered and augmented inside the train step), 'host' (augmented by
    # TensorFlow threads) or 'auto' ('device' where they fit in half a device's memory).
    config.data.placement = "auto"
    # The built-in synthetic set to generate first, if any (configs/synthetic.py sets it).
    config.data.synthetic = None
    config.num_classes = 7
    config.class_names = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")
    config.input_size = 112
    config.pad_size = 4
    config.num_neighbors = 8

    # Model (docs/METHOD.md §2). The feature size D follows from the backbone.
    config.model = ml_collections.ConfigDict()
    config.model.backbone = "ir50"
    config.model.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16'
    # Backbone weights to start from: a folder written by `python -m ldl_jax.convert` or another
    # run's workdir (its latest checkpoint's backbone). The head and AdaptiveSimNet start fresh.
    # "" trains from scratch.
    config.model.pretrained = ""
    config.head_l2 = 0.0  # L2 on the head kernel (declared but unused by the reference)

    # Optimisation (docs/METHOD.md §3, §4).
    config.batch_size = 32
    config.num_epochs = 60
    config.lr = 1e-4
    config.lr_decay = 0.1
    config.lr_steps = (10, 30)  # epochs after which the LR is multiplied by lr_decay
    config.gamma = 0.01  # weight of the centre loss
    config.lamb_init = 0.5  # a logit: lambda starts at sigmoid(0.5) = 0.6225
    config.lamb_lr = 10.0
    config.lamb_beta = 0.0
    config.center_lr = 0.5
    config.center_push_scale = 0.1
    config.class_weights = False  # True: sklearn's 'balanced' weights on L_cls
    # The method's variant (`METHOD_VARIANTS` above, chosen by the config argument: e.g.
    # --config=configs/resnet50_raf.py:ldl_jax): lamb_fixed_class_mean, lamb_class_mean,
    # neighbor_distribution and prior_correction.
    config.update(METHOD_VARIANTS[variant])
    # Baselines of the noise studies (docs/METHOD.md §3): `label_smoothing` mixes this much of
    # the uniform distribution into every target; `loss` 'gce' replaces the cross-entropy by
    # the generalised cross-entropy with exponent `gce_q`. The method: 0.0, 'cross_entropy'.
    config.label_smoothing = 0.0
    config.loss = "cross_entropy"
    config.gce_q = 0.7
    # Where the neighbours' predictions and features come from (docs/METHOD.md §3): 'forward'
    # runs the backbone on the K neighbour images every step (the method); 'memory_bank' reads
    # each neighbour's last central pass from a bank in the train state, ~(3 + K) / 3 times
    # fewer FLOPs (beyond the paper).
    config.neighbors = "forward"

    # Devices (see ldl_jax/parallel.py and docs/USAGE.md).
    config.parallel = "mesh"  # 'mesh' (jit over a device mesh) or 'pmap'
    config.sync_batch_norm = True  # False (pmap only): BatchNorm statistics per device

    # Loop.
    config.val_interval = 200  # steps
    config.save_interval = 2  # epochs
    config.log_every_steps = 50
    config.eval_batch_size = 128
    config.num_train_steps = -1  # > 0 stops early (tests, benchmarks); -1 trains num_epochs
    return config
