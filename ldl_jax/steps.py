"""The LDLVA train step and the eval step, each one compiled XLA program (docs/METHOD.md §3).

`make_train_step` closes over the model, the optimiser and the loss constants and returns a
pure `train_step(state, batch) -> (state, metrics)`; `compile_train_step` jits it with the
state donated. Batches hold uint8 images, normalised on the device by `models.normalize_images`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldl_jax import config_fields, ldl, memory_bank, models
from ldl_jax.train_state import TrainState

TRAIN_METRICS = ("loss", "cls_loss", "center_loss", "accuracy", "mean_lambda")
# What each class's mean theta is held at under config.lamb_fixed_class_mean.


def _head_kernel_l2(params):
    return jnp.square(params["classifier"]["head"]["kernel"]).sum()


def _class_mean_logits(config, train_labels, train_neighbors) -> np.ndarray:
    """(C,) the mean theta each class keeps under `config.lamb_fixed_class_mean`."""
    if config.lamb_class_mean == "lamb_init":
        return np.full((config.num_classes,), config.lamb_init, np.float32)
    if train_neighbors is None:
        raise ValueError(
            "config.lamb_class_mean='consensus' needs train_neighbors, the (N, K) VA neighbours "
            "of the training rows"
        )
    consensus = ldl.neighbor_label_consensus(
        jnp.asarray(train_labels), jnp.asarray(train_neighbors), config.num_classes
    )
    return np.asarray(ldl.consensus_class_means(consensus, config.lamb_init), np.float32)


def make_train_step(
    model: models.LDLVA,
    tx: optax.GradientTransformation,
    config,
    class_weights=None,
    axis_name: str | None = None,
    train_labels=None,
    train_neighbors=None,
    input_images=None,
):
    """Returns `train_step(state, batch) -> (state, metrics)`.

    Args:
      model: the LDLVA network.
      tx: the optimiser of the model parameters.
      config: reads num_classes, gamma, head_l2, lamb_init, lamb_lr, lamb_beta,
        lamb_fixed_class_mean, lamb_class_mean, neighbor_distribution, label_smoothing, loss,
        gce_q, center_lr, center_push_scale (B and K come from the batch).
      class_weights: optional (C,) weights omega of L_cls per label.
      axis_name: when the step runs per device (pmap), the device axis: gradients, metrics,
        the theta rows and the centre statistics are then reduced to those of the global batch.
      train_labels: (N,) the label of every training row; needed by
        `config.lamb_fixed_class_mean`, which keeps each class's mean theta fixed.
      train_neighbors: (N, K) every training row's VA neighbours; needed by
        `config.lamb_class_mean = 'consensus'`, which sets each class's mean theta from how
        much its rows' neighbours agree on a label (`ldl.consensus_class_means`).
      input_images: `(step, batch) -> (image, neighbor_image)`, how the step obtains its uint8
        images inside the compiled program (`ldl_jax.data.feeds`: gathered from images resident
        on the devices and augmented); None: the batch carries them, augmented on the host.

    The batch holds `image` (B,H,W,3) and `neighbor_image` (B,K,H,W,3) uint8 (or what
    `input_images` reads instead), `label` (B,), `va_weight` (B,K), `index` (B,),
    `neighbor_index` (B,K) and `neighbor_label` (B,K). With `config.neighbors = 'memory_bank'`
    the neighbours come from the state's bank (`ldl_jax.memory_bank`) and no neighbour image is
    read.
    """
    num_classes = config.num_classes
    use_bank = config_fields.uses_memory_bank(config)
    omega = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
    if config.lamb_fixed_class_mean:
        if train_labels is None:
            raise ValueError(
                "config.lamb_fixed_class_mean needs train_labels, the (N,) labels of the "
                "training rows, to keep each class's mean lambda logit at lamb_init"
            )
        # numpy, not jax arrays: constants of the compiled program, never committed to one
        # device (a multi-process program may not close over a single-device array).
        train_labels = np.asarray(train_labels, np.int32)
        class_counts = np.bincount(train_labels, minlength=num_classes).astype(np.float32)
        class_means = _class_mean_logits(config, train_labels, train_neighbors)

    def neighbor_pass(state, neighbor_images, rng):
        """Train-mode BN (statistics used and updated), no gradient: the neighbours' features
        (B, K, D), softmax outputs (B, K, C) and the updated BatchNorm statistics."""
        batch_size, num_neighbors = neighbor_images.shape[:2]
        (neighbor_features, neighbor_logits), updates = model.apply(
            {"params": state.params, "batch_stats": state.batch_stats},
            neighbor_images.reshape((batch_size * num_neighbors,) + neighbor_images.shape[2:]),
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": rng},
        )
        neighbor_features = jax.lax.stop_gradient(neighbor_features).reshape(
            batch_size, num_neighbors, -1
        )
        neighbor_probs = jax.nn.softmax(jax.lax.stop_gradient(neighbor_logits)).reshape(
            batch_size, num_neighbors, num_classes
        )
        return neighbor_features, neighbor_probs, updates["batch_stats"]

    def train_step(state: TrainState, batch):
        if input_images is None:
            image, neighbor_image = batch["image"], batch.get("neighbor_image")
        else:  # with the bank, the unused neighbour images are compiled away
            image, neighbor_image = input_images(state.step, batch)
        images = models.normalize_images(image, model.dtype)
        batch_size, num_neighbors = batch["neighbor_index"].shape
        labels = batch["label"]
        rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        neighbor_rng, central_rng = jax.random.split(rng)

        # 1. Neighbour pass, or its last results read from the memory bank (no BN update).
        if use_bank:
            neighbor_features, neighbor_probs = memory_bank.read(
                state.bank, batch["neighbor_index"]
            )
            batch_stats = state.batch_stats
        else:
            neighbor_images = models.normalize_images(neighbor_image, model.dtype)
            neighbor_features, neighbor_probs, batch_stats = neighbor_pass(
                state, neighbor_images, neighbor_rng
            )
        neighbor_lam = jax.nn.sigmoid(state.theta[batch["neighbor_index"]])
        neighbor_probs = ldl.neighbor_distributions(
            config.neighbor_distribution, neighbor_probs, batch["neighbor_label"], neighbor_lam
        )

        def loss_fn(params, theta_batch):
            # 2. Central pass (BN statistics updated again, after the neighbours' if they ran).
            (features, logits), updates_central = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": central_rng},
            )
            # 3. AdaptiveSimNet, differentiable through the central features too.
            similarity, updates_simnet = model.apply(
                {"params": params, "batch_stats": updates_central["batch_stats"]},
                features,
                neighbor_features,
                train=True,
                mutable=["batch_stats"],
                method=models.LDLVA.similarity,
            )
            lam = jax.nn.sigmoid(theta_batch)
            probs = jax.nn.softmax(logits)
            target = ldl.target_distribution(
                lam, labels, neighbor_probs, batch["va_weight"] * similarity, num_classes
            )
            if config.label_smoothing:
                target = ldl.smooth_labels(target, config.label_smoothing)
            sample_weights = None if omega is None else omega[labels]
            cls_loss = ldl.classification_loss(
                probs, target, sample_weights, loss=config.loss, gce_q=config.gce_q
            )
            all_features = jnp.concatenate(
                [features, neighbor_features.reshape(batch_size * num_neighbors, -1)]
            )
            all_labels = jnp.concatenate([labels, batch["neighbor_label"].reshape(-1)])
            all_lam = jax.lax.stop_gradient(jnp.concatenate([lam, neighbor_lam.reshape(-1)]))
            center_loss = ldl.center_loss(all_features, all_labels, all_lam, state.centers)
            loss = cls_loss + config.gamma * center_loss
            if config.head_l2:
                loss = loss + config.head_l2 * _head_kernel_l2(params)
            aux = {
                "batch_stats": updates_simnet["batch_stats"],
                "center_rows": (all_features, all_labels, all_lam),
                "target": target,
                "central_outputs": (features, probs),
                "metrics": {
                    "loss": loss,
                    "cls_loss": cls_loss,
                    "center_loss": center_loss,
                    "accuracy": (jnp.argmax(logits, -1) == labels).mean(),
                    "mean_lambda": lam.mean(),
                },
            }
            return loss, aux

        index = batch["index"]
        grad_fn = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)
        (param_grads, theta_grads), aux = grad_fn(state.params, state.theta[index])
        metrics = aux["metrics"]
        bank_update = {}
        if use_bank:  # the central rows' entries, from this step's central pass
            bank_update["bank"] = memory_bank.write(
                state.bank, index, *aux["central_outputs"], axis_name=axis_name
            )
        if axis_name is not None:
            # Each device differentiated the mean over its own rows: average the parameter
            # gradients; a theta row lives on one device, so its gradient only needs the
            # global 1/B, and every device applies every device's rows.
            param_grads = jax.lax.pmean(param_grads, axis_name)
            theta_grads = theta_grads / jax.lax.psum(1, axis_name)
            index = jax.lax.all_gather(index, axis_name).reshape(-1)
            theta_grads = jax.lax.all_gather(theta_grads, axis_name).reshape(-1)
            metrics = jax.lax.pmean(metrics, axis_name)

        # 4. Adam on the model parameters.
        param_updates, opt_state = tx.update(param_grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, param_updates)

        # 5. Sparse SGD with momentum on theta: only the batch's rows (and momenta) move.
        velocity = config.lamb_beta * state.theta_momentum[index] - config.lamb_lr * theta_grads
        theta = state.theta.at[index].add(velocity)
        theta_momentum = state.theta_momentum.at[index].set(velocity)
        if config.lamb_fixed_class_mean:
            theta = ldl.recenter_per_class(theta, train_labels, class_counts, class_means)

        # 6. The prior correction's running label and target marginals (models.PriorCorrection).
        batch_stats = aux["batch_stats"]
        if model.prior_correction:
            batch_stats = models.update_prior_marginals(
                batch_stats, labels, aux["target"], axis_name=axis_name
            )

        # 7. Centre pull and push from this step's (pre-update) features, labels and lambdas.
        centers = ldl.update_centers(
            state.centers,
            *aux["center_rows"],
            lr=config.center_lr,
            push_scale=config.center_push_scale,
            axis_name=axis_name,
        )
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            theta=theta,
            theta_momentum=theta_momentum,
            centers=centers,
            **bank_update,
        )
        return new_state, metrics

    return train_step


def compile_train_step(
    model, tx, config, class_weights=None, train_labels=None, train_neighbors=None
):
    """The single-device train step jitted once, with the incoming state donated."""
    return jax.jit(
        make_train_step(
            model,
            tx,
            config,
            class_weights,
            train_labels=train_labels,
            train_neighbors=train_neighbors,
        ),
        donate_argnums=0,
    )


def make_eval_step(model: models.LDLVA, num_classes: int):
    """Returns `eval_step(params, batch_stats, batch) -> counts` for masked, padded batches.

    The counts are summed over batches on the host: `confusion` (C, C) int32 with rows the true
    and columns the predicted class, and `prob_sum` (C,) the summed predicted distributions.
    """

    def eval_step(params, batch_stats, batch):
        images = models.normalize_images(batch["image"], model.dtype)
        _, logits = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
        mask = batch["mask"].astype(jnp.int32)
        true = jax.nn.one_hot(batch["label"], num_classes, dtype=jnp.int32) * mask[:, None]
        predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.int32)
        probs = jax.nn.softmax(logits) * mask[:, None]
        return {"confusion": true.T @ predicted, "prob_sum": probs.sum(axis=0)}

    return eval_step
