"""ldl_jax.checkpointing: which checkpoint a `--checkpoint` value names."""

import flax
import jax.numpy as jnp
import pytest

from ldl_jax import checkpointing


@flax.struct.dataclass
class _State:
    step: jnp.ndarray
    weight: jnp.ndarray


def test_a_step_is_looked_up_in_the_latest_series_then_the_best(tmp_path):
    for which in (checkpointing.LATEST, checkpointing.BEST):
        (tmp_path / "checkpoints" / which).mkdir(parents=True)
    checkpoints = checkpointing.Checkpoints(tmp_path)
    try:
        for step in (20, 30):
            checkpoints.save(_State(jnp.asarray(step), jnp.zeros(2)), {"step": step})
        best = _State(jnp.asarray(10), jnp.ones(2))
        checkpoints.save(best, {"step": 10}, checkpointing.BEST, metrics={"accuracy": 0.5})
        checkpoints.wait_until_finished()

        assert checkpoints.find("latest") == (checkpointing.LATEST, 30)
        assert checkpoints.find("20") == (checkpointing.LATEST, 20)
        assert checkpoints.find("best") == (checkpointing.BEST, 10)
        # The best checkpoint's step is no longer among the latest ones: found in its series.
        assert checkpoints.find("10") == (checkpointing.BEST, 10)
        with pytest.raises(FileNotFoundError, match=r"step 7 .*latest: \[20, 30\], best: \[10\]"):
            checkpoints.find("7")
        with pytest.raises(ValueError, match="use 'latest', 'best' or a step number"):
            checkpoints.find("newest")
    finally:
        checkpoints.close()
