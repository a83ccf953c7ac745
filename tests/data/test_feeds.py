"""Device-resident training input: the placement choice (`config.data.placement`). The in-step
gather + augmentation is in tests/data/test_device_augment.py."""

import jax
import pytest

from ldl_jax.data import feeds
from tests.helpers.tiny import make_tiny_config


def _placement_config(placement):
    config = make_tiny_config()
    config.data.placement = placement
    return config


@pytest.mark.parametrize(
    "placement, limit, image_bytes, expected",
    [
        ("auto", 1000, 500, "device"),  # half the device memory: fits
        ("auto", 1000, 501, "host"),
        ("auto", None, 1, "host"),  # CPU devices report no limit
        ("device", None, 10**12, "device"),
        ("host", 10**12, 1, "host"),
    ],
)
def test_placement_choice(monkeypatch, placement, limit, image_bytes, expected):
    monkeypatch.setattr(feeds, "device_memory_limit", lambda: limit)
    assert feeds.choose_placement(_placement_config(placement), image_bytes) == expected


def test_device_placement_that_cannot_fit_is_named(monkeypatch):
    monkeypatch.setattr(feeds, "device_memory_limit", lambda: 2 << 30)
    with pytest.raises(ValueError, match=r"placement='device'.*3\.0 GiB, more than the 2\.0"):
        feeds.choose_placement(_placement_config("device"), 3 << 30)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU rule")
def test_cpu_devices_report_no_memory_limit():
    assert feeds.device_memory_limit() is None
