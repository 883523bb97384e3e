"""Loss values from mmseg's documented behaviour and PyTorch's cross entropy."""
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses


def test_mmseg_documented_values():
  logits = jnp.array([[100.0, -100.0]])
  label = jnp.array([1])
  assert float(losses.cross_entropy(logits, label)) == pytest.approx(200.0)
  assert float(losses.cross_entropy(logits, label, class_weight=[0.8, 0.2])) == pytest.approx(40.0)


def test_mean_counts_ignored_pixels_unless_avg_non_ignore():
  logits = jnp.array([[100.0, -100.0]] * 4)
  label = jnp.array([1, 255, 255, 255])
  assert float(losses.cross_entropy(logits, label)) == pytest.approx(200.0 / 4)
  assert float(losses.cross_entropy(logits, label, avg_non_ignore=True)) == pytest.approx(200.0)


def test_matches_torch_cross_entropy():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7, 4)).astype(np.float32)  # NCHW
  label = rng.integers(0, 4, size=(2, 5, 7))
  label[0, :2] = 255
  ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits.transpose(0, 3, 1, 2)),
                                          torch.from_numpy(label), ignore_index=255, reduction="none")
  out = losses.cross_entropy(jnp.asarray(logits), jnp.asarray(label))
  assert float(out) == pytest.approx(float(ref.mean()), rel=1e-5)


def test_segmentor_losses_weight_aux_head():
  logits = jnp.zeros((1, 4, 4, 3)).at[..., 0].set(5.0)
  label = jnp.ones((1, 8, 8), jnp.int32)
  cfg = {"decode_head": {"loss_decode": {"type": "CrossEntropyLoss", "loss_weight": 1.0}},
         "auxiliary_head": {"loss_decode": {"type": "CrossEntropyLoss", "loss_weight": 0.4}}}
  total, logs = losses.segmentor_losses({"decode": logits, "aux": [logits]}, label, cfg)
  per_pixel = -np.log(np.exp(0) / (np.exp(5) + 2))
  assert float(logs["decode.loss_ce"]) == pytest.approx(per_pixel, rel=1e-5)
  assert float(logs["aux.loss_ce"]) == pytest.approx(0.4 * per_pixel, rel=1e-5)
  assert float(total) == pytest.approx(1.4 * per_pixel, rel=1e-5)
  assert float(logs["decode.acc_seg"]) == 0.0
