"""Architectures: published parameter counts, derived feature sizes, AdaptiveSimNet's range."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldl_jax import backbones, models
from tests.helpers.tiny import make_tiny_config


def _num_params(module, input_size, *args):
    variables = jax.eval_shape(
        lambda: module.init(
            jax.random.PRNGKey(0), jnp.zeros((1, input_size, input_size, 3)), *args, train=False
        )
    )
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    "backbone, published",
    [
        # torchvision's resnet18 / resnet50 with their 1000-class head.
        ("resnet18", 11_689_512),
        ("resnet50", 25_557_032),
    ],
)
def test_resnet_parameter_counts_match_published(backbone, published):
    classifier = models.Classifier(backbones.BACKBONES[backbone][0], num_classes=1000)
    assert _num_params(classifier, 224) == published


def test_multichannel_head_parameter_count_matches_fork():
    # The fork's MultiChannel head on the 4x4x2048 map of a 112 input: 272,656,384 parameters.
    with_head = models.Classifier(backbones.BACKBONES["resnet50_multichannel"][0], num_classes=7)
    without_head = models.Classifier(backbones.BACKBONES["resnet50"][0], num_classes=7)
    assert _num_params(with_head, 112) - _num_params(without_head, 112) == 272_656_384


def test_ir50_parameter_count_matches_face_evolve():
    # face.evoLVe IR_50 at 112 (backbone only, no classifier).
    assert _num_params(backbones.IR50(), 112) == 43_574_976


@pytest.mark.parametrize("backbone", ["ir_tiny", "resnet_tiny"])
def test_feature_size_comes_from_backbone(backbone):
    config = make_tiny_config()
    config.model.backbone = backbone
    model = models.create_model(config)
    x = jnp.zeros((2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x, 3, method=models.LDLVA.initialize)
    features, logits = model.apply(variables, x, train=False)
    assert features.shape == (2, backbones.BACKBONE_FEATURE_DIMS[backbone])
    assert logits.shape == (2, config.num_classes)


def test_simnet_output_lies_in_clipped_sigmoid_range():
    simnet = models.AdaptiveSimNet()
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)
    neighbors = jnp.asarray(rng.normal(size=(8, 5, 6)), jnp.float32)
    variables = simnet.init(jax.random.PRNGKey(1), features, neighbors, train=False)
    # A large output layer spreads the logits far past -1.3 on both sides.
    variables["params"]["Dense_1"]["kernel"] = variables["params"]["Dense_1"]["kernel"] * 10
    similarity, _ = simnet.apply(
        variables, features, neighbors, train=True, mutable=["batch_stats"]
    )
    assert similarity.shape == (8, 5)
    floor = 1 / (1 + np.exp(1.3))
    assert float(similarity.min()) >= floor - 1e-6
    assert float(similarity.max()) <= 1.0  # sigmoid; float32 rounds its top to 1
    # Logits below -1.3 are clipped to exactly the floor.
    np.testing.assert_allclose(float(similarity.min()), floor, rtol=1e-5)


def test_head_initialisation_is_truncated_he_normal():
    classifier = models.Classifier(backbones.BACKBONES["resnet_tiny"][0], num_classes=7)
    variables = classifier.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
    kernel = np.asarray(variables["params"]["head"]["kernel"])
    fan_in = kernel.shape[0]
    # Keras' HeNormal: a normal truncated at 2 sigma, sigma scaled so the std is sqrt(2 / fan_in).
    sigma = np.sqrt(2 / fan_in) / 0.87962566103423978
    assert np.abs(kernel).max() <= 2 * sigma
    assert np.abs(kernel).max() > 1.5 * np.sqrt(2 / fan_in)  # not a plain uniform/small init
    assert np.all(variables["params"]["head"]["bias"] == 0)


def test_pair_dense_equals_dense_on_the_concatenation():
    rng = np.random.default_rng(0)
    central = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    neighbors = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    layer = models.PairDense(7)
    variables = layer.init(jax.random.PRNGKey(0), central, neighbors)
    pairs = jnp.concatenate([jnp.broadcast_to(central[:, None], neighbors.shape), neighbors], -1)
    expected = pairs @ variables["params"]["kernel"] + variables["params"]["bias"]
    np.testing.assert_allclose(
        layer.apply(variables, central, neighbors), expected, rtol=1e-5, atol=1e-6
    )
