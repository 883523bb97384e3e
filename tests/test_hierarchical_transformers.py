"""MiT, Swin, Twins, ConvNeXt and PoolFormer pieces the oracle cases do not isolate, each against
PyTorch (the op itself or a transcription of mmseg's code) or the documented formula."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import layers
from segjax.models.backbones import convnext, poolformer, swin, twins
from segjax.models.backbones.mit import MixVisionTransformer

torch = pytest.importorskip("torch")
F = torch.nn.functional


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def test_layer_norm_as_accurate_as_torch_where_fast_variance_loses_digits():
  # A large common offset: E[x^2] - E[x]^2 cancels catastrophically in float32 (flax's default,
  # off by 0.7 here); PyTorch's two-pass definition does not. Truth: the formula in float64.
  x = (1000.0 + np.random.default_rng(0).normal(size=(4, 7, 32))).astype(np.float32)
  centered = x.astype(np.float64) - x.astype(np.float64).mean(-1, keepdims=True)
  truth = centered / np.sqrt((centered ** 2).mean(-1, keepdims=True) + 1e-6)
  norm = layers.LayerNorm(1e-6)
  got = np.asarray(norm.apply(norm.init(jax.random.PRNGKey(0), x), x))
  torch_error = np.abs(F.layer_norm(torch.from_numpy(x), (32,), eps=1e-6).numpy() - truth).max()
  assert np.abs(got - truth).max() <= 2 * torch_error


def test_drop_path_needs_train_and_a_dropout_rng():
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      return layers.drop_path(self, x, 0.5, train)

  x = jnp.ones((4000, 3, 2))
  block = Block()
  assert (block.apply({}, x, True) == x).all()  # no rng: deterministic
  assert (block.apply({}, x, False, rngs={"dropout": jax.random.PRNGKey(0)}) == x).all()
  out = np.asarray(block.apply({}, x, True, rngs={"dropout": jax.random.PRNGKey(0)}))
  per_sample = out.reshape(len(out), -1)
  # Whole samples are dropped or kept, kept ones scaled by 1 / (1 - p) (mmcv's drop_path).
  assert set(np.unique(per_sample)) == {0.0, 2.0}
  assert (per_sample.min(1) == per_sample.max(1)).all()
  assert abs((per_sample[:, 0] == 0).mean() - 0.5) < 0.05


def test_multihead_attention_matches_torch():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 12, 16)).astype(np.float32)
  kv = rng.normal(size=(2, 5, 16)).astype(np.float32)
  ref = torch.nn.MultiheadAttention(16, 4, batch_first=True)
  with torch.no_grad():
    ref.in_proj_bias.normal_()
    ref.out_proj.bias.normal_()
  mha = layers.MultiheadAttention(16, 4)
  params = {"in_proj_weight": ref.in_proj_weight.detach().numpy(), "in_proj_bias": ref.in_proj_bias.detach().numpy(),
            "out_proj": {"kernel": ref.out_proj.weight.detach().numpy().T, "bias": ref.out_proj.bias.detach().numpy()}}
  expected = ref(torch.from_numpy(q), torch.from_numpy(kv), torch.from_numpy(kv))[0].detach().numpy()
  np.testing.assert_allclose(mha.apply({"params": params}, q, kv, kv), expected, atol=1e-5)


def _mmseg_relative_position_index(window):
  # mmseg WindowMSA.__init__, transcribed.
  def double_step_seq(step1, len1, step2, len2):
    seq1 = torch.arange(0, step1 * len1, step1)
    seq2 = torch.arange(0, step2 * len2, step2)
    return (seq1[:, None] + seq2[None, :]).reshape(1, -1)
  coords = double_step_seq(2 * window - 1, window, 1, window)
  return (coords + coords.T).flip(1).numpy()


@pytest.mark.parametrize("window", [7, 12])
def test_swin_relative_position_index_is_mmseg_buffer(window):
  np.testing.assert_array_equal(swin.relative_position_index(window), _mmseg_relative_position_index(window))


def _mmseg_shift_mask(hp, wp, window, shift):
  # mmseg ShiftWindowMSA.forward's mask, transcribed.
  img_mask = torch.zeros((1, hp, wp, 1))
  slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  cnt = 0
  for h in slices:
    for w in slices:
      img_mask[:, h, w, :] = cnt
      cnt += 1
  x = img_mask.view(1, hp // window, window, wp // window, window, 1).permute(0, 1, 3, 2, 4, 5)
  windows = x.reshape(-1, window * window)
  mask = windows.unsqueeze(1) - windows.unsqueeze(2)
  return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0).numpy()


@pytest.mark.parametrize("hp,wp,window", [(14, 21, 7), (24, 36, 12)])
def test_swin_shifted_window_mask_is_mmseg_mask(hp, wp, window):
  np.testing.assert_array_equal(swin.shifted_window_mask(hp, wp, window, window // 2),
                                _mmseg_shift_mask(hp, wp, window, window // 2))


def test_patch_merging_matches_unfold_norm_linear():
  # mmseg PatchMerging: 'corner' padding, nn.Unfold(2, stride 2), LayerNorm, Linear (no bias).
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 6)).astype(np.float32)  # odd: padded
  merge = swin.PatchMerging(12)
  variables = merge.init(jax.random.PRNGKey(0), x)
  p = variables["params"]
  t = F.pad(nchw(x), (0, 1, 0, 1))
  t = F.unfold(t, 2, stride=2).transpose(1, 2)
  t = F.layer_norm(t, (24,), torch.tensor(np.asarray(p["norm"]["scale"])),
                   torch.tensor(np.asarray(p["norm"]["bias"])))
  expected = (t @ torch.tensor(np.asarray(p["reduction"]["kernel"]))).numpy().reshape(2, 3, 4, 12)
  np.testing.assert_allclose(merge.apply(variables, x), expected, atol=1e-5)


def _mmseg_lsa_mask(h, w, window):
  # mmseg LocallyGroupedSelfAttention.forward's mask, transcribed (its -0 slices included).
  pad_r = (window - w % window) % window
  pad_b = (window - h % window) % window
  hp, wp = h + pad_b, w + pad_r
  mask = torch.zeros((1, hp, wp))
  mask[:, -pad_b:, :].fill_(1)
  mask[:, :, -pad_r:].fill_(1)
  _h, _w = hp // window, wp // window
  mask = mask.reshape(1, _h, window, _w, window).transpose(2, 3).reshape(1, _h * _w, window * window)
  attn_mask = mask.unsqueeze(2) - mask.unsqueeze(3)
  return attn_mask.masked_fill(attn_mask != 0, -1000.0).masked_fill(attn_mask == 0, 0.0)[0].numpy()


@pytest.mark.parametrize("h,w", [(12, 16), (14, 16), (12, 14), (14, 14)])
def test_twins_lsa_mask_is_mmseg_mask(h, w):
  got = twins.lsa_window_mask(h, w, 7)
  np.testing.assert_array_equal(got, _mmseg_lsa_mask(h, w, 7))
  if (-h) % 7 == 0 or (-w) % 7 == 0:  # mmseg's -0 slice marks every token: nothing is masked
    assert not got.any()


def test_poolformer_pooling_matches_torch():
  x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
  expected = F.avg_pool2d(nchw(x), 3, 1, 1, count_include_pad=False).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(poolformer.avg_pool_exclude_pad(jnp.asarray(x), 3), expected, atol=1e-6)


def test_convnext_gap_before_final_norm_gives_pooled_vectors():
  model = convnext.ConvNeXt(arch={"depths": (1, 1, 1, 1), "channels": (4, 8, 12, 16)}, out_indices=(1, -1))
  x = jnp.ones((2, 64, 64, 3))
  outs = model.apply(model.init(jax.random.PRNGKey(0), x), x)
  assert [o.shape for o in outs] == [(2, 8), (2, 16)]  # -1 is stage 3, as mmcls's 4 + index


def test_poolformer_out_indices_count_downsampling_positions():
  model = poolformer.PoolFormer(arch={"layers": (1, 1, 1, 1), "embed_dims": (4, 8, 12, 16)}, out_indices=(0, 1, -1))
  x = jnp.ones((1, 64, 64, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert [o.shape for o in model.apply(variables, x)] == [(1, 16, 16, 4), (1, 8, 8, 8), (1, 2, 2, 16)]
  assert sorted(k for k in variables["params"] if k.startswith("norm")) == ["norm0", "norm1", "norm6"]


@pytest.mark.parametrize("module,message", [
    (MixVisionTransformer(num_layers=(1, 1, 1)), "num_layers"),
    (swin.SwinTransformer(strides=(2, 2, 2, 2)), "patch_size"),
    (twins.SVT(windiow_sizes=(7,)), "windiow_sizes"),
    (convnext.ConvNeXt(arch="huge"), "arch='huge'"),
    (poolformer.PoolFormer(norm_cfg=dict(type="BN")), "norm_cfg"),
    (MixVisionTransformer(norm_cfg=dict(type="BN")), "LayerNorm"),
])
def test_bad_arguments_are_named(module, message):
  with pytest.raises(ValueError, match=message):
    module.init(jax.random.PRNGKey(0), jnp.ones((1, 64, 64, 3)))
