"""Official pretrained weights of the plain-ViT family, loaded as a user loads them.

Each test writes a synthetic file with a release's own key names and shapes (tiny dims, random
values), loads it with source detection, and compares with the mmseg-named state dict that
mmseg's converter script (tools/model_converters/*2mmseg.py, restated here line by line) and
mmseg's backbone ``init_weights`` (position-table resize, ``strict=False``) make of it, converted
by ``segjax.convert.convert_state_dict``: original -> mmseg -> segjax.
"""
import re

import jax
import numpy as np
import pytest

from segjax.convert import (CheckpointMismatchError, convert_backbone_checkpoint, convert_state_dict,
                            to_state_dict)
from segjax.models.backbones.beit import BEiT, MAE
from segjax.models.backbones.vit import VisionTransformer
from segjax.train import loop

torch = pytest.importorskip("torch")
F = torch.nn.functional

C, HEADS, LAYERS, PATCH = 16, 2, 2, 8
RNG = np.random.default_rng(0)


def rand(*shape):
  return RNG.normal(size=shape).astype(np.float32)


def tiny_vit(**kw):
  return VisionTransformer(img_size=32, patch_size=PATCH, embed_dims=C, num_layers=LAYERS,
                           num_heads=HEADS, **kw)


def shapes(module, size=32):
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), np.zeros((1, size, size, 3), np.float32))


def model_keys(target) -> set:
  return set(to_state_dict(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)))


def mmseg_vit_init_weights(state, target, mode="bicubic"):
  """mmseg VisionTransformer.init_weights on a loaded state_dict: pos_embed of another shape is
  resized (its resize_pos_embed: cls + last pos_size**2 tokens, F.interpolate), then
  load_state_dict(strict=False) keeps only the model's keys."""
  state = dict(state)
  want = target["params"]["pos_embed"].shape
  if state["pos_embed"].shape != want:
    pos = torch.from_numpy(state["pos_embed"])
    pos_size = int(np.sqrt(pos.shape[1] - 1))
    side = int(np.sqrt(want[1] - 1))
    grid = pos[:, -pos_size * pos_size:].reshape(1, pos_size, pos_size, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side, side), mode=mode, align_corners=False)
    state["pos_embed"] = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1).numpy()
  keys = model_keys(target)
  return {k: v for k, v in state.items() if k in keys}


def assert_same(out, expected):
  assert jax.tree.structure(out) == jax.tree.structure(expected)
  for path, a in jax.tree_util.tree_leaves_with_path(out):
    b = expected
    for part in path:
      b = b[part.key]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6, err_msg=str(path))


def save_pth(path, state, wrapper=None):
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
  torch.save({wrapper: tensors} if wrapper else tensors, str(path))
  return str(path)


# ---- timm / DeiT ---------------------------------------------------------------------------

def timm_vit_state(grid=4, distilled=False):
  state = {"cls_token": rand(1, 1, C), "pos_embed": rand(1, 1 + distilled + grid * grid, C),
           "patch_embed.proj.weight": rand(C, 3, PATCH, PATCH), "patch_embed.proj.bias": rand(C),
           "norm.weight": rand(C), "norm.bias": rand(C), "head.weight": rand(10, C), "head.bias": rand(10)}
  if distilled:
    state.update({"dist_token": rand(1, 1, C), "head_dist.weight": rand(10, C), "head_dist.bias": rand(10)})
  for i in range(LAYERS):
    b = f"blocks.{i}."
    state.update({b + "norm1.weight": rand(C), b + "norm1.bias": rand(C),
                  b + "attn.qkv.weight": rand(3 * C, C), b + "attn.qkv.bias": rand(3 * C),
                  b + "attn.proj.weight": rand(C, C), b + "attn.proj.bias": rand(C),
                  b + "norm2.weight": rand(C), b + "norm2.bias": rand(C),
                  b + "mlp.fc1.weight": rand(4 * C, C), b + "mlp.fc1.bias": rand(4 * C),
                  b + "mlp.fc2.weight": rand(C, 4 * C), b + "mlp.fc2.bias": rand(C)})
  return state


def vit2mmseg(ckpt):
  """tools/model_converters/vit2mmseg.py convert_vit."""
  new_ckpt = {}
  for k, v in ckpt.items():
    if k.startswith("head"):
      continue
    if k.startswith("norm"):
      new_k = k.replace("norm.", "ln1.")
    elif k.startswith("patch_embed"):
      new_k = k.replace("proj", "projection") if "proj" in k else k
    elif k.startswith("blocks"):
      if "norm" in k:
        new_k = k.replace("norm", "ln")
      elif "mlp.fc1" in k:
        new_k = k.replace("mlp.fc1", "ffn.layers.0.0")
      elif "mlp.fc2" in k:
        new_k = k.replace("mlp.fc2", "ffn.layers.1")
      elif "attn.qkv" in k:
        new_k = k.replace("attn.qkv.", "attn.attn.in_proj_")
      elif "attn.proj" in k:
        new_k = k.replace("attn.proj", "attn.attn.out_proj")
      else:
        new_k = k
      new_k = new_k.replace("blocks.", "layers.")
    else:
      new_k = k
    new_ckpt[new_k] = v
  return new_ckpt


def test_timm_vit(tmp_path):
  target = shapes(tiny_vit(final_norm=True))
  original = timm_vit_state()
  path = save_pth(tmp_path / "vit_timm.pth", original)  # timm: a bare state_dict
  expected = convert_state_dict(mmseg_vit_init_weights(vit2mmseg(original), target), target)
  assert_same(convert_backbone_checkpoint(path, target, "VisionTransformer"), expected)
  # The same weights after mmseg's converter (mmseg's pretrain/*.pth) load alike.
  converted = save_pth(tmp_path / "vit_mmseg_pretrain.pth", vit2mmseg(original))
  assert_same(convert_backbone_checkpoint(converted, target, "VisionTransformer"), expected)


def test_distilled_deit_of_another_grid(tmp_path):
  # DeiT (wrapped in 'model'): a dist_token and its position, a 3x3 grid resized to the model's 4x4;
  # the model has no final norm, so the release's norm is not loaded (mmseg's strict=False).
  target = shapes(tiny_vit(final_norm=False))
  original = timm_vit_state(grid=3, distilled=True)
  path = save_pth(tmp_path / "deit.pth", original, wrapper="model")
  expected = convert_state_dict(mmseg_vit_init_weights(vit2mmseg(original), target), target)
  out = convert_backbone_checkpoint(path, target, "VisionTransformer")
  assert_same(out, expected)
  # The dist token's position (index 1) is the one left out.
  assert not np.allclose(out["params"]["pos_embed"][:, 1], original["pos_embed"][:, 1])


def test_checkpoint_wrappers_and_formats(tmp_path):
  # mmcv's loader unwraps 'state_dict' and drops DataParallel's 'module.'; releases also wrap the
  # weights in 'model' (DeiT, BEiT, MAE) or 'module'.
  target = shapes(tiny_vit(final_norm=True))
  original = timm_vit_state()
  expected = convert_backbone_checkpoint(save_pth(tmp_path / "bare.pth", original), target, "VisionTransformer")
  parallel = save_pth(tmp_path / "parallel.pt", {f"module.{k}": v for k, v in original.items()}, wrapper="module")
  assert_same(convert_backbone_checkpoint(parallel, target, "VisionTransformer"), expected)
  odd = tmp_path / "vit.ckpt"
  odd.write_bytes(b"")
  with pytest.raises(CheckpointMismatchError, match=r"vit.ckpt: unknown checkpoint format; expected a "
                                                    r"\.pth/\.pt/\.pth\.tar \(PyTorch\) or \.npz"):
    convert_backbone_checkpoint(str(odd), target, "VisionTransformer")


# ---- the JAX ViT / AugReg .npz ---------------------------------------------------------------

def jax_vit_state(grid=4):
  hd = C // HEADS
  state = {"cls": rand(1, 1, C), "embedding/kernel": rand(PATCH, PATCH, 3, C), "embedding/bias": rand(C),
           "Transformer/posembed_input/pos_embedding": rand(1, 1 + grid * grid, C),
           "Transformer/encoder_norm/scale": rand(C), "Transformer/encoder_norm/bias": rand(C),
           "pre_logits/kernel": rand(C, C), "pre_logits/bias": rand(C),
           "head/kernel": rand(C, 10), "head/bias": rand(10)}
  for i in range(LAYERS):
    b = f"Transformer/encoderblock_{i}/"
    a = b + "MultiHeadDotProductAttention_1/"
    state.update({b + "LayerNorm_0/scale": rand(C), b + "LayerNorm_0/bias": rand(C),
                  b + "LayerNorm_2/scale": rand(C), b + "LayerNorm_2/bias": rand(C),
                  b + "MlpBlock_3/Dense_0/kernel": rand(C, 4 * C), b + "MlpBlock_3/Dense_0/bias": rand(4 * C),
                  b + "MlpBlock_3/Dense_1/kernel": rand(4 * C, C), b + "MlpBlock_3/Dense_1/bias": rand(C),
                  a + "out/kernel": rand(HEADS, hd, C), a + "out/bias": rand(C)})
    for part in ("query", "key", "value"):
      state.update({a + f"{part}/kernel": rand(C, HEADS, hd), a + f"{part}/bias": rand(HEADS, hd)})
  return state


def vitjax2mmseg(jax_weights, num_layer):
  """tools/model_converters/vitjax2mmseg.py vit_jax_to_torch (torch tensors in and out)."""
  w = {}
  w["patch_embed.projection.weight"] = jax_weights["embedding/kernel"].permute(3, 2, 0, 1)
  w["patch_embed.projection.bias"] = jax_weights["embedding/bias"]
  w["pos_embed"] = jax_weights["Transformer/posembed_input/pos_embedding"]
  w["cls_token"] = jax_weights["cls"]
  w["ln1.weight"] = jax_weights["Transformer/encoder_norm/scale"]
  w["ln1.bias"] = jax_weights["Transformer/encoder_norm/bias"]
  for i in range(num_layer):
    jb, tb = f"Transformer/encoderblock_{i}", f"layers.{i}"
    att = f"{jb}/MultiHeadDotProductAttention_1"
    w[f"{tb}.ln1.weight"] = jax_weights[f"{jb}/LayerNorm_0/scale"]
    w[f"{tb}.ln1.bias"] = jax_weights[f"{jb}/LayerNorm_0/bias"]
    qkv_weight = torch.from_numpy(np.stack([jax_weights[f"{att}/{p}/kernel"].numpy()
                                            for p in ("query", "key", "value")], 1))
    qkv_bias = torch.from_numpy(np.stack([jax_weights[f"{att}/{p}/bias"].numpy()
                                          for p in ("query", "key", "value")], 0))
    w[f"{tb}.attn.attn.in_proj_weight"] = torch.flatten(qkv_weight, start_dim=1)
    w[f"{tb}.attn.attn.in_proj_bias"] = torch.flatten(qkv_bias, start_dim=0)
    w[f"{tb}.attn.attn.out_proj.weight"] = torch.flatten(jax_weights[f"{att}/out/kernel"], start_dim=0, end_dim=1)
    w[f"{tb}.attn.attn.out_proj.bias"] = jax_weights[f"{att}/out/bias"]
    w[f"{tb}.ln2.weight"] = jax_weights[f"{jb}/LayerNorm_2/scale"]
    w[f"{tb}.ln2.bias"] = jax_weights[f"{jb}/LayerNorm_2/bias"]
    for j, name in ((0, "ffn.layers.0.0"), (1, "ffn.layers.1")):
      w[f"{tb}.{name}.weight"] = jax_weights[f"{jb}/MlpBlock_3/Dense_{j}/kernel"]
      w[f"{tb}.{name}.bias"] = jax_weights[f"{jb}/MlpBlock_3/Dense_{j}/bias"]
  for k, v in w.items():
    if "weight" in k and "patch_embed" not in k and "ln" not in k:
      v = v.permute(1, 0)
    w[k] = v
  return {k: v.numpy() for k, v in w.items()}


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_jax_npz_of_another_grid(tmp_path, mode):
  # SETR's ViTs set interpolate_mode='bilinear', which mmseg's init_weights resizes the table with:
  # the backbone's config dict carries it, as the trainer passes it.
  backbone = dict(type="VisionTransformer", img_size=32, patch_size=PATCH, embed_dims=C, num_layers=LAYERS,
                  num_heads=HEADS, final_norm=True, interpolate_mode=mode)
  target = shapes(tiny_vit(final_norm=True, interpolate_mode=mode))
  original = jax_vit_state(grid=3)
  path = str(tmp_path / "ViT-B_16.npz")
  np.savez(path, **original)
  mmseg_state = vitjax2mmseg({k: torch.from_numpy(v) for k, v in original.items()}, LAYERS)
  expected = convert_state_dict(mmseg_vit_init_weights(mmseg_state, target, mode), target)
  assert_same(convert_backbone_checkpoint(path, target, backbone), expected)


# ---- BEiT and MAE originals (beit2mmseg.py) ---------------------------------------------------

def beit2mmseg(ckpt):
  """tools/model_converters/beit2mmseg.py convert_beit."""
  new_ckpt = {}
  for k, v in ckpt.items():
    if k.startswith("blocks"):
      new_key = k.replace("blocks", "layers")
      if "norm" in new_key:
        new_key = new_key.replace("norm", "ln")
      elif "mlp.fc1" in new_key:
        new_key = new_key.replace("mlp.fc1", "ffn.layers.0.0")
      elif "mlp.fc2" in new_key:
        new_key = new_key.replace("mlp.fc2", "ffn.layers.1")
      new_ckpt[new_key] = v
    elif k.startswith("patch_embed"):
      new_ckpt[k.replace("patch_embed.proj", "patch_embed.projection")] = v
    else:
      new_ckpt[k] = v
  return new_ckpt


def mmseg_geometric_sequence_interpolation(src_size, dst_size, sequence, num):
  """mmseg BEiT._geometric_sequence_interpolation, with interp2d(x, y, z, kind='cubic')(dx, dy)
  replaced as scipy's interp2d transition guide gives it for a regular grid:
  RectBivariateSpline(x, y, z.T)(dx, dy).T."""
  from scipy.interpolate import RectBivariateSpline

  def geometric_progression(a, r, n):
    return a * (1.0 - r**n) / (1.0 - r)

  left, right = 1.01, 1.5
  while right - left > 1e-6:
    q = (left + right) / 2.0
    gp = geometric_progression(1, q, src_size // 2)
    if gp > dst_size // 2:
      right = q
    else:
      left = q
  dis = []
  cur = 1
  for i in range(src_size // 2):
    dis.append(cur)
    cur += q**(i + 1)
  r_ids = [-_ for _ in reversed(dis)]
  x = r_ids + [0] + dis
  y = r_ids + [0] + dis
  t = dst_size // 2.0
  dx = np.arange(-t, t + 0.1, 1.0)
  dy = np.arange(-t, t + 0.1, 1.0)
  new_sequence = []
  for i in range(num):
    z = sequence[:, i].view(src_size, src_size).float().numpy()
    f = lambda xs, ys, z=z: RectBivariateSpline(x, y, z.T)(xs, ys).T
    new_sequence.append(torch.Tensor(f(dx, dy)).contiguous().view(-1, 1).to(sequence))
  return torch.cat(new_sequence, dim=-1)


def mmseg_beit_init_weights(state, model_values, window, mae=False):
  """mmseg BEiT/MAE.init_weights: resize_rel_pos_embed (the index buffers dropped, tables of
  another size interpolated), MAE's resize_abs_pos_embed, then load_state_dict(strict=False): the
  model keeps its own value of every key the checkpoint lacks or the model does not have."""
  state = {k: torch.from_numpy(v) for k, v in state.items() if "relative_position_index" not in k}
  for key in list(state):
    if "relative_position_bias_table" in key:
      rel_pos_bias = state[key]
      src_num_pos, num_attn_heads = rel_pos_bias.size()
      dst_num_pos = (2 * window - 1) ** 2 + 3
      num_extra_tokens = dst_num_pos - (window * 2 - 1) * (window * 2 - 1)
      src_size = int((src_num_pos - num_extra_tokens)**0.5)
      dst_size = int((dst_num_pos - num_extra_tokens)**0.5)
      if src_size != dst_size:
        extra_tokens = rel_pos_bias[-num_extra_tokens:, :]
        rel_pos_bias = rel_pos_bias[:-num_extra_tokens, :]
        new = mmseg_geometric_sequence_interpolation(src_size, dst_size, rel_pos_bias, num_attn_heads)
        state[key] = torch.cat((new, extra_tokens), dim=0)
  if mae and "pos_embed" in state:
    pos = state["pos_embed"]
    orig_size, new_size = int((pos.shape[-2] - 1)**0.5), window
    if orig_size != new_size:
      tokens = pos[:, 1:].reshape(-1, orig_size, orig_size, C).permute(0, 3, 1, 2)
      tokens = F.interpolate(tokens, size=(new_size, new_size), mode="bicubic", align_corners=False)
      state["pos_embed"] = torch.cat((pos[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)
  own = to_state_dict(model_values)
  return {k: state[k].numpy() if k in state else v for k, v in own.items()}


def beit_like_state(window, mae=False):
  state = {"cls_token": rand(1, 1, C), "patch_embed.proj.weight": rand(C, 3, PATCH, PATCH),
           "patch_embed.proj.bias": rand(C), "head.weight": rand(10, C), "head.bias": rand(10)}
  state.update({"pos_embed": rand(1, 1 + window * window, C), "norm.weight": rand(C), "norm.bias": rand(C)}
               if mae else {"fc_norm.weight": rand(C), "fc_norm.bias": rand(C)})
  for i in range(LAYERS):
    b = f"blocks.{i}."
    state.update({b + "norm1.weight": rand(C), b + "norm1.bias": rand(C),
                  b + "attn.qkv.weight": rand(3 * C, C), b + "attn.proj.weight": rand(C, C),
                  b + "attn.proj.bias": rand(C), b + "norm2.weight": rand(C), b + "norm2.bias": rand(C),
                  b + "mlp.fc1.weight": rand(4 * C, C), b + "mlp.fc1.bias": rand(4 * C),
                  b + "mlp.fc2.weight": rand(C, 4 * C), b + "mlp.fc2.bias": rand(C)})
    if mae:
      state[b + "attn.qkv.bias"] = rand(3 * C)
    else:
      side = 2 * window - 1
      state.update({b + "gamma_1": rand(C), b + "gamma_2": rand(C), b + "attn.q_bias": rand(C),
                    b + "attn.v_bias": rand(C),
                    b + "attn.relative_position_bias_table": rand(side * side + 3, HEADS),
                    b + "attn.relative_position_index": np.zeros((window**2 + 1,) * 2, np.int64)})
  return state


@pytest.mark.parametrize("cls", [BEiT, MAE])
def test_beit_and_mae_originals_of_another_window(tmp_path, cls):
  mae = cls is MAE
  # Model values stand for the initialisation that what the release lacks keeps (the final ln1;
  # MAE's layer scales and relative position tables).
  model = cls(img_size=32, patch_size=PATCH, embed_dims=C, num_layers=LAYERS, num_heads=HEADS, final_norm=True)
  model_values = jax.tree.map(lambda s: rand(*s.shape), shapes(model))
  original = beit_like_state(window=3, mae=mae)  # a 24x24 release for a 32x32 model: window 3 -> 4
  path = save_pth(tmp_path / f"{cls.__name__}_original.pth", original, wrapper="model")
  expected = convert_state_dict(mmseg_beit_init_weights(beit2mmseg(original), model_values, 4, mae), model_values)
  out = convert_backbone_checkpoint(path, model_values, cls.__name__)
  assert_same(out, expected)
  np.testing.assert_array_equal(out["params"]["ln1"]["scale"], model_values["params"]["ln1"]["scale"])
  # mmseg's converted file (pretrain/*.pth) loads alike.
  converted = save_pth(tmp_path / f"{cls.__name__}_mmseg.pth", beit2mmseg(original))
  assert_same(convert_backbone_checkpoint(converted, model_values, cls.__name__), expected)


# ---- errors ------------------------------------------------------------------------------------

def test_no_release_fits_names_file_and_each_source(tmp_path):
  target = shapes(tiny_vit())
  original = timm_vit_state()
  original["blocks.0.attn.qkv.weight"] = rand(3 * C, C + 1)
  path = save_pth(tmp_path / "odd.pth", original)
  with pytest.raises(CheckpointMismatchError) as err:
    convert_backbone_checkpoint(path, target, "VisionTransformer")
  message = str(err.value)
  assert path in message
  assert "mmseg: no key starts with 'backbone.'" in message
  assert re.search(r"timm: blocks\.0\.attn\.qkv\.weight .*\(48, 17\)", message)
  assert "mmseg_pretrain: unexpected key" in message
  assert "jax: unexpected key" in message
  with pytest.raises(CheckpointMismatchError, match=re.escape(f"{path} as VisionTransformer's 'timm' release")):
    convert_backbone_checkpoint(path, target, "VisionTransformer", source="timm")
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    convert_backbone_checkpoint(str(tmp_path / "missing.npz"), target, "VisionTransformer")


# ---- the config forms mmseg uses, through the trainer -----------------------------------------

def vit_train_state():
  # Random parameters in the model's shapes (an eager init would compile op by op, ~20 s).
  params = jax.tree.map(lambda s: jax.device_put(rand(*s.shape)), shapes(tiny_vit())["params"])
  return loop.TrainState(step=0, params={"backbone": params, "decode_head": {"w": np.zeros(3, np.float32)}},
                         batch_stats={}, opt_state=None, rng=None)


def test_backbone_pretrained_config_forms(tmp_path):
  state = vit_train_state()
  target = {"params": state.params["backbone"]}
  original = timm_vit_state()
  expected = convert_state_dict(mmseg_vit_init_weights(vit2mmseg(original), target), target)["params"]
  timm_file = save_pth(tmp_path / "deit.pth", original, wrapper="model")
  # An mmcls-style classifier: the backbone (here in mmseg's names) under "backbone.", a head.
  mmcls_file = save_pth(tmp_path / "mmcls.pth", {**{f"backbone.{k}": v for k, v in vit2mmseg(original).items()},
                                                 "head.layers.head.weight": rand(10, C)}, wrapper="state_dict")
  vit = dict(type="VisionTransformer")
  forms = [(dict(pretrained=timm_file, backbone=vit), "model.pretrained"),
           (dict(backbone=dict(vit, pretrained=timm_file)), "model.backbone.pretrained"),
           (dict(backbone=dict(vit, init_cfg=dict(type="Pretrained", checkpoint=timm_file))),
            "model.backbone.init_cfg.checkpoint"),
           (dict(backbone=dict(vit, init_cfg=dict(type="Pretrained", checkpoint=mmcls_file, prefix="backbone."))),
            "model.backbone.init_cfg.checkpoint")]
  for model_cfg, key in forms:
    found = loop._backbone_pretrained(model_cfg)
    assert found[0] == key
    loaded = loop._load_pretrained_backbone(state, found[1], model_cfg["backbone"], found[2], found[0])
    assert_same(loaded.params["backbone"], expected)
    np.testing.assert_array_equal(loaded.params["decode_head"]["w"], state.params["decode_head"]["w"])
  assert loop._backbone_pretrained(dict(backbone=dict(vit, init_cfg=dict(type="Kaiming")))) is None
  # The network a backbone wraps (mmseg's STDC/BiSeNetV1/ICNet in1k-pre configs): the wrapper's
  # family rules place its weights.
  wrapped = dict(type="STDCContextPathNet", backbone_cfg=dict(
      type="STDCNet", init_cfg=dict(type="Pretrained", checkpoint="pretrain/stdc1.pth")))
  assert loop._backbone_pretrained(dict(backbone=wrapped)) == (
      "model.backbone.backbone_cfg.init_cfg.checkpoint", "pretrain/stdc1.pth", None)
  # Without the prefix the mmcls file's keys fit no release.
  with pytest.raises(ValueError, match=r"model.backbone.init_cfg.checkpoint: .*mmcls.pth: no release"):
    loop._load_pretrained_backbone(state, mmcls_file, "VisionTransformer", None, "model.backbone.init_cfg.checkpoint")
  with pytest.raises(CheckpointMismatchError, match="no key starts with the init_cfg prefix .neck.."):
    convert_backbone_checkpoint(mmcls_file, target, "VisionTransformer", prefix="neck")


def test_backbone_pretrained_config_errors(tmp_path):
  state = vit_train_state()
  vit = dict(type="VisionTransformer")
  with pytest.raises(ValueError, match="set more than once.*model.pretrained='a.pth', model.backbone.pretrained='b.pth'"):
    loop._backbone_pretrained(dict(pretrained="a.pth", backbone=dict(vit, pretrained="b.pth")))
  with pytest.raises(ValueError, match="set more than once"):
    loop._backbone_pretrained(dict(backbone=dict(vit, pretrained="b.pth",
                                                 init_cfg=dict(type="Pretrained", checkpoint="c.pth"))))
  with pytest.raises(ValueError, match="model.init_cfg=Pretrained.*load_from"):
    loop._backbone_pretrained(dict(init_cfg=dict(type="Pretrained", checkpoint="seg.pth"), backbone=vit))
  for url in ("https://download.openmmlab.com/mmclassification/v0/vit.pth", "open-mmlab://resnet50_v1c",
              "torchvision://resnet50"):
    with pytest.raises(FileNotFoundError, match=rf"model.backbone.init_cfg.checkpoint='{re.escape(url)}' is a "
                                                "URL or model-zoo name; segjax does not download"):
      loop._load_pretrained_backbone(state, url, "VisionTransformer", None, "model.backbone.init_cfg.checkpoint")
  missing = str(tmp_path / "pretrain" / "vit.pth")
  with pytest.raises(FileNotFoundError, match=rf"model.backbone.pretrained='{re.escape(missing)}': no such file"):
    loop._load_pretrained_backbone(state, missing, "VisionTransformer", None, "model.backbone.pretrained")
