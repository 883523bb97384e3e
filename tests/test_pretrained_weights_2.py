"""Official releases of backbone weights (the authors' ImageNet checkpoints, mmcls's, torchvision's)
loaded through each family's ``CHECKPOINT_RULES`` (issues 21 and 23).

Each test writes a synthetic checkpoint with the release's own key names and shapes (tiny dims,
listed here from the authors' model code), loads it with ``convert_backbone_checkpoint`` (the
release detected among the family's sources, as ``model.pretrained`` does) and
compares every leaf with what mmseg loads: the same weights put through a short re-statement of
mmseg's converter script (tools/model_converters/*2mmseg.py, torch ops as written there), then
``convert_state_dict`` as an mmseg checkpoint. Parameters the release does not hold are compared
with the model's initialisation, where mmseg's ``strict=False`` load leaves them.
"""
import jax
import numpy as np
import pytest
from flax import traverse_util

from segjax.convert import (CheckpointMismatchError, convert_backbone_checkpoint, convert_state_dict,
                            family_rules, to_state_dict)
from segjax.models.backbones.convnext import ConvNeXt
from segjax.models.backbones.mit import MixVisionTransformer
from segjax.models.backbones.mobilenet_v2 import MobileNetV2
from segjax.models.backbones.mobilenet_v3 import MobileNetV3
from segjax.models.backbones.poolformer import PoolFormer
from segjax.models.backbones.stdc import STDCContextPathNet, STDCNet
from segjax.models.backbones.swin import SwinTransformer
from segjax.models.backbones.twins import PCPVT, SVT

torch = pytest.importorskip("torch")


def random_state(shapes: dict) -> dict:
  """{key: tensor} of standard normal values for the release's {key: shape}."""
  generator = torch.Generator().manual_seed(0)
  return {k: torch.randn(shape, generator=generator) for k, shape in shapes.items()}


def init(model, size=32):
  """Stand-in initial variables of ``model``: random arrays of its parameter shapes (from
  ``jax.eval_shape``: a real ``init`` compiles the model, tens of seconds on a busy machine)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, size, size, 3), np.float32))
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def save(tmp_path, state, name="release.pth"):
  path = tmp_path / name
  torch.save(state, path)
  return str(path)


def mmseg_loads(cls, mmseg_state: dict, variables, left_at_init: tuple[str, ...] = ()) -> dict:
  """The variables mmseg's backbone holds after loading ``mmseg_state`` (mmseg names) with
  ``strict=False``: every key through the family's mmseg rules, the modules in ``left_at_init``
  and those under them (held by no key) as the model initialised them."""
  state = {k: v.numpy() for k, v in mmseg_state.items()}
  initial = to_state_dict(variables)
  state.update({k: v for k, v in initial.items() if k.startswith(tuple(m + "." for m in left_at_init))})
  return convert_state_dict(state, variables, {"": family_rules(cls, "mmseg")})


def assert_same_leaves(got, want):
  got, want = traverse_util.flatten_dict(got, sep="/"), traverse_util.flatten_dict(want, sep="/")
  assert sorted(got) == sorted(want)
  for path in want:
    np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(want[path]), err_msg=path)


# ---- MixVisionTransformer: NVlabs SegFormer ----------------------------------------------

def segformer_shapes(embed_dims, num_heads, num_layers, patch_sizes, sr_ratios, mlp_ratio=4,
                     in_channels=3, num_classes=10):
  """Key shapes of NVlabs SegFormer's ``MixVisionTransformer`` (mix_transformer.py)."""
  shapes, previous = {}, in_channels
  for i, heads in enumerate(num_heads):
    c, stage, hidden = embed_dims * heads, i + 1, mlp_ratio * embed_dims * heads
    shapes.update({f"patch_embed{stage}.proj.weight": (c, previous, patch_sizes[i], patch_sizes[i]),
                   f"patch_embed{stage}.proj.bias": (c,),
                   f"patch_embed{stage}.norm.weight": (c,), f"patch_embed{stage}.norm.bias": (c,)})
    for j in range(num_layers[i]):
      block = f"block{stage}.{j}."
      shapes.update({block + "norm1.weight": (c,), block + "norm1.bias": (c,),
                     block + "attn.q.weight": (c, c), block + "attn.q.bias": (c,),
                     block + "attn.kv.weight": (2 * c, c), block + "attn.kv.bias": (2 * c,),
                     block + "attn.proj.weight": (c, c), block + "attn.proj.bias": (c,)})
      if sr_ratios[i] > 1:
        shapes.update({block + "attn.sr.weight": (c, c, sr_ratios[i], sr_ratios[i]),
                       block + "attn.sr.bias": (c,),
                       block + "attn.norm.weight": (c,), block + "attn.norm.bias": (c,)})
      shapes.update({block + "norm2.weight": (c,), block + "norm2.bias": (c,),
                     block + "mlp.fc1.weight": (hidden, c), block + "mlp.fc1.bias": (hidden,),
                     block + "mlp.dwconv.dwconv.weight": (hidden, 1, 3, 3),
                     block + "mlp.dwconv.dwconv.bias": (hidden,),
                     block + "mlp.fc2.weight": (c, hidden), block + "mlp.fc2.bias": (c,)})
    shapes.update({f"norm{stage}.weight": (c,), f"norm{stage}.bias": (c,)})
    previous = c
  shapes.update({"head.weight": (num_classes, previous), "head.bias": (num_classes,)})
  return shapes


def mit2mmseg(ckpt):
  """mmseg's tools/model_converters/mit2mmseg.py ``convert_mit``, as written there."""
  new_ckpt = {}
  for k, v in ckpt.items():
    if k.startswith("head"):
      continue
    elif k.startswith("patch_embed"):
      stage_i = int(k.split(".")[0].replace("patch_embed", ""))
      new_k = k.replace(f"patch_embed{stage_i}", f"layers.{stage_i - 1}.0")
      new_v = v
      if "proj." in new_k:
        new_k = new_k.replace("proj.", "projection.")
    elif k.startswith("block"):
      stage_i = int(k.split(".")[0].replace("block", ""))
      new_k = k.replace(f"block{stage_i}", f"layers.{stage_i - 1}.1")
      new_v = v
      if "attn.q." in new_k:
        sub_item_k = k.replace("q.", "kv.")
        new_k = new_k.replace("q.", "attn.in_proj_")
        new_v = torch.cat([v, ckpt[sub_item_k]], dim=0)
      elif "attn.kv." in new_k:
        continue
      elif "attn.proj." in new_k:
        new_k = new_k.replace("proj.", "attn.out_proj.")
      elif "mlp." in new_k:
        new_k = new_k.replace("mlp.", "ffn.layers.")
        if "fc1.weight" in new_k or "fc2.weight" in new_k:
          new_v = v.reshape((*v.shape, 1, 1))
        new_k = new_k.replace("fc1.", "0.").replace("dwconv.dwconv.", "1.").replace("fc2.", "4.")
    elif k.startswith("norm"):
      stage_i = int(k.split(".")[0].replace("norm", ""))
      new_k = k.replace(f"norm{stage_i}", f"layers.{stage_i - 1}.2")
      new_v = v
    else:
      new_k, new_v = k, v
    new_ckpt[new_k] = new_v
  return new_ckpt


def test_mit_loads_segformer_imagenet_weights(tmp_path):
  model = MixVisionTransformer(embed_dims=4, num_layers=(2, 1, 1, 1), num_heads=(1, 2, 2, 4))
  variables = init(model)
  release = random_state(segformer_shapes(4, (1, 2, 2, 4), (2, 1, 1, 1), (7, 3, 3, 3), (8, 4, 2, 1)))
  got = convert_backbone_checkpoint(save(tmp_path, release), variables, MixVisionTransformer)
  converted = mit2mmseg(release)
  assert_same_leaves(got, mmseg_loads(MixVisionTransformer, converted, variables))
  # The converter's output file, which mmseg's configs name as pretrained, loads the same.
  assert_same_leaves(convert_backbone_checkpoint(save(tmp_path, converted, "mit_b0.pth"), variables,
                                                 MixVisionTransformer), got)


# ---- SwinTransformer: microsoft/Swin-Transformer ---------------------------------------------

def swin_shapes(embed_dims, depths, num_heads, window, patch_size=4, mlp_ratio=4, in_channels=3,
                num_classes=10):
  """Key shapes of Microsoft's ``SwinTransformer`` (swin_transformer.py), buffers included: every
  block's ``relative_position_index`` and the shifted blocks' ``attn_mask`` (4 windows here)."""
  c = embed_dims
  shapes = {"patch_embed.proj.weight": (c, in_channels, patch_size, patch_size),
            "patch_embed.proj.bias": (c,), "patch_embed.norm.weight": (c,), "patch_embed.norm.bias": (c,)}
  for i, depth in enumerate(depths):
    for j in range(depth):
      block = f"layers.{i}.blocks.{j}."
      shapes.update({block + "norm1.weight": (c,), block + "norm1.bias": (c,),
                     block + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, num_heads[i]),
                     block + "attn.relative_position_index": (window ** 2, window ** 2),
                     block + "attn.qkv.weight": (3 * c, c), block + "attn.qkv.bias": (3 * c,),
                     block + "attn.proj.weight": (c, c), block + "attn.proj.bias": (c,),
                     block + "norm2.weight": (c,), block + "norm2.bias": (c,),
                     block + "mlp.fc1.weight": (mlp_ratio * c, c), block + "mlp.fc1.bias": (mlp_ratio * c,),
                     block + "mlp.fc2.weight": (c, mlp_ratio * c), block + "mlp.fc2.bias": (c,)})
      if j % 2:
        shapes[block + "attn_mask"] = (4, window ** 2, window ** 2)
    if i < len(depths) - 1:
      shapes.update({f"layers.{i}.downsample.reduction.weight": (2 * c, 4 * c),
                     f"layers.{i}.downsample.norm.weight": (4 * c,),
                     f"layers.{i}.downsample.norm.bias": (4 * c,)})
      c *= 2
  shapes.update({"norm.weight": (c,), "norm.bias": (c,),
                 "head.weight": (num_classes, c), "head.bias": (num_classes,)})
  return shapes


def swin2mmseg(ckpt):
  """mmseg's tools/model_converters/swin2mmseg.py ``convert_swin``, as written there."""
  new_ckpt = {}

  def correct_unfold_reduction_order(x):
    out_channel, in_channel = x.shape
    x = x.reshape(out_channel, 4, in_channel // 4)
    return x[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_channel, in_channel)

  def correct_unfold_norm_order(x):
    in_channel = x.shape[0]
    x = x.reshape(4, in_channel // 4)
    return x[[0, 2, 1, 3], :].transpose(0, 1).reshape(in_channel)

  for k, v in ckpt.items():
    if k.startswith("head"):
      continue
    elif k.startswith("layers"):
      new_v = v
      if "attn." in k:
        new_k = k.replace("attn.", "attn.w_msa.")
      elif "mlp." in k:
        if "mlp.fc1." in k:
          new_k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
        elif "mlp.fc2." in k:
          new_k = k.replace("mlp.fc2.", "ffn.layers.1.")
        else:
          new_k = k.replace("mlp.", "ffn.")
      elif "downsample" in k:
        new_k = k
        if "reduction." in k:
          new_v = correct_unfold_reduction_order(v)
        elif "norm." in k:
          new_v = correct_unfold_norm_order(v)
      else:
        new_k = k
      new_k = new_k.replace("layers", "stages", 1)
    elif k.startswith("patch_embed"):
      new_v = v
      new_k = k.replace("proj", "projection") if "proj" in k else k
    else:
      new_v, new_k = v, k
    new_ckpt[new_k] = new_v
  return new_ckpt


def test_swin_loads_microsoft_imagenet_weights(tmp_path):
  model = SwinTransformer(embed_dims=8, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=3)
  variables = init(model, 48)
  release = random_state(swin_shapes(8, (2, 2, 1, 1), (1, 2, 2, 4), window=3))
  got = convert_backbone_checkpoint(save(tmp_path, release), variables, SwinTransformer)
  converted = swin2mmseg(release)
  # mmseg's model has no final ``norm`` nor ``attn_mask``: strict=False ignores them, and leaves
  # the output norms norm0..norm3, which the release does not hold, at their initialisation.
  assert {"norm.weight", "stages.0.blocks.1.attn_mask"} <= set(converted)
  used = {k: v for k, v in converted.items() if k not in ("norm.weight", "norm.bias")
          and not k.endswith("attn_mask")}
  want = mmseg_loads(SwinTransformer, used, variables, left_at_init=("norm0", "norm1", "norm2", "norm3"))
  assert_same_leaves(got, want)
  assert_same_leaves(convert_backbone_checkpoint(save(tmp_path, converted, "swin_converted.pth"), variables,
                                                 SwinTransformer), want)


# ---- Twins PCPVT / SVT: Meituan-AutoML/Twins ------------------------------------------------

def twins_shapes(model, embed_dims, depths, sr_ratios, mlp_ratio=2, patch_sizes=(4, 2, 2, 2),
                 in_channels=3, num_classes=10):
  """Key shapes of Twins' ``CPVTV2`` (``model='pcpvt'``) or ``ALTGVT`` (``'svt'``: even blocks
  ``GroupAttention`` with a fused ``qkv``), gvt.py, with ``qkv_bias=True``."""
  shapes, previous = {}, in_channels
  for i, c in enumerate(embed_dims):
    shapes.update({f"patch_embeds.{i}.proj.weight": (c, previous, patch_sizes[i], patch_sizes[i]),
                   f"patch_embeds.{i}.proj.bias": (c,),
                   f"patch_embeds.{i}.norm.weight": (c,), f"patch_embeds.{i}.norm.bias": (c,)})
    for j in range(depths[i]):
      block = f"blocks.{i}.{j}."
      shapes.update({block + "norm1.weight": (c,), block + "norm1.bias": (c,),
                     block + "attn.proj.weight": (c, c), block + "attn.proj.bias": (c,),
                     block + "norm2.weight": (c,), block + "norm2.bias": (c,),
                     block + "mlp.fc1.weight": (mlp_ratio * c, c), block + "mlp.fc1.bias": (mlp_ratio * c,),
                     block + "mlp.fc2.weight": (c, mlp_ratio * c), block + "mlp.fc2.bias": (c,)})
      if model == "svt" and j % 2 == 0:
        shapes.update({block + "attn.qkv.weight": (3 * c, c), block + "attn.qkv.bias": (3 * c,)})
        continue
      shapes.update({block + "attn.q.weight": (c, c), block + "attn.q.bias": (c,),
                     block + "attn.kv.weight": (2 * c, c), block + "attn.kv.bias": (2 * c,)})
      if sr_ratios[i] > 1:
        shapes.update({block + "attn.sr.weight": (c, c, sr_ratios[i], sr_ratios[i]),
                       block + "attn.sr.bias": (c,),
                       block + "attn.norm.weight": (c,), block + "attn.norm.bias": (c,)})
    shapes.update({f"pos_block.{i}.proj.0.weight": (c, 1, 3, 3), f"pos_block.{i}.proj.0.bias": (c,)})
    previous = c
  shapes.update({"norm.weight": (previous,), "norm.bias": (previous,),
                 "head.weight": (num_classes, previous), "head.bias": (num_classes,)})
  return shapes


def twins2mmseg(model, ckpt):
  """mmseg's tools/model_converters/twins2mmseg.py ``convert_twins``, as written there."""
  new_ckpt = {}
  for k, v in list(ckpt.items()):
    new_v = v
    if k.startswith("head"):
      continue
    elif k.startswith("patch_embeds"):
      new_k = k.replace("proj.", "projection.") if "proj." in k else k
    elif k.startswith("blocks"):
      if "attn.q." in k:
        new_k = k.replace("q.", "attn.in_proj_")
        new_v = torch.cat([v, ckpt[k.replace("attn.q.", "attn.kv.")]], dim=0)
      elif "mlp.fc1" in k:
        new_k = k.replace("mlp.fc1", "ffn.layers.0.0")
      elif "mlp.fc2" in k:
        new_k = k.replace("mlp.fc2", "ffn.layers.1")
      elif model == "pcpvt":
        new_k = k.replace("proj.", "attn.out_proj.") if "attn.proj." in k else k
      else:
        if "attn.proj." in k:
          k_lst = k.split(".")
          new_k = k.replace("proj.", "attn.out_proj.") if int(k_lst[2]) % 2 == 1 else k
        else:
          new_k = k
      new_k = new_k.replace("blocks.", "layers.")
    elif k.startswith("pos_block"):
      new_k = k.replace("pos_block", "position_encodings")
      if "proj.0." in new_k:
        new_k = new_k.replace("proj.0.", "proj.")
    else:
      new_k = k
    if "attn.kv." not in k:
      new_ckpt[new_k] = new_v
  return new_ckpt


@pytest.mark.parametrize("kind", ["pcpvt", "svt"])
def test_twins_loads_official_imagenet_weights(tmp_path, kind):
  embed_dims, depths = (8, 16, 24, 32), (2, 2, 1, 1)
  if kind == "pcpvt":
    cls, sr_ratios = PCPVT, (8, 4, 2, 1)
    model = PCPVT(embed_dims=embed_dims, depths=depths, mlp_ratios=(2,) * 4, qkv_bias=True)
  else:
    cls, sr_ratios = SVT, (4, 2, 1, 1)
    model = SVT(embed_dims=embed_dims, num_heads=(1, 2, 2, 4), depths=depths, mlp_ratios=(2,) * 4,
                sr_ratios=sr_ratios, windiow_sizes=(3, 3, 3, 3), qkv_bias=True)
  variables = init(model)
  release = random_state(twins_shapes(kind, embed_dims, depths, sr_ratios))
  got = convert_backbone_checkpoint(save(tmp_path, release), variables, cls)
  converted = twins2mmseg(kind, release)
  assert "norm.weight" in converted  # the classifier's final norm: not in mmseg's model, ignored
  used = {k: v for k, v in converted.items() if not k.startswith("norm.")}
  left_at_init = tuple(f"norm_list.{i}" for i in range(4)) if kind == "svt" else ()
  assert_same_leaves(got, mmseg_loads(cls, used, variables, left_at_init))
  assert_same_leaves(convert_backbone_checkpoint(save(tmp_path, converted, "twins_converted.pth"), variables,
                                                 cls), got)


# ---- mmcls ConvNeXt and PoolFormer: ImageNet classifiers ------------------------------------

def convnext_shapes(depths, channels, in_channels=3, num_classes=10):
  """Key shapes of an mmcls ``ImageClassifier`` with a ``ConvNeXt`` backbone (default
  out_indices=-1: only ``norm3``) and a linear head."""
  shapes = {"backbone.downsample_layers.0.0.weight": (channels[0], in_channels, 4, 4),
            "backbone.downsample_layers.0.0.bias": (channels[0],),
            "backbone.downsample_layers.0.1.weight": (channels[0],),
            "backbone.downsample_layers.0.1.bias": (channels[0],)}
  for i, (depth, c) in enumerate(zip(depths, channels)):
    if i:
      down = f"backbone.downsample_layers.{i}."
      shapes.update({down + "0.weight": (channels[i - 1],), down + "0.bias": (channels[i - 1],),
                     down + "1.weight": (c, channels[i - 1], 2, 2), down + "1.bias": (c,)})
    for j in range(depth):
      block = f"backbone.stages.{i}.{j}."
      shapes.update({block + "depthwise_conv.weight": (c, 1, 7, 7), block + "depthwise_conv.bias": (c,),
                     block + "norm.weight": (c,), block + "norm.bias": (c,),
                     block + "pointwise_conv1.weight": (4 * c, c), block + "pointwise_conv1.bias": (4 * c,),
                     block + "pointwise_conv2.weight": (c, 4 * c), block + "pointwise_conv2.bias": (c,),
                     block + "gamma": (c,)})
  shapes.update({"backbone.norm3.weight": (channels[-1],), "backbone.norm3.bias": (channels[-1],),
                 "head.fc.weight": (num_classes, channels[-1]), "head.fc.bias": (num_classes,)})
  return shapes


def poolformer_shapes(depths, dims, mlp_ratio=4, in_channels=3, num_classes=10):
  """Key shapes of an mmcls ``ImageClassifier`` with a ``PoolFormer`` backbone (default
  out_indices=-1: only ``norm6``): network positions 0, 2, 4, 6 are the stages, 1, 3, 5 the
  downsampling embeddings."""
  shapes = {"backbone.patch_embed.proj.weight": (dims[0], in_channels, 7, 7),
            "backbone.patch_embed.proj.bias": (dims[0],)}
  for i, (depth, c) in enumerate(zip(depths, dims)):
    for j in range(depth):
      block = f"backbone.network.{2 * i}.{j}."
      shapes.update({block + "norm1.weight": (c,), block + "norm1.bias": (c,),
                     block + "norm2.weight": (c,), block + "norm2.bias": (c,),
                     block + "mlp.fc1.weight": (mlp_ratio * c, c, 1, 1), block + "mlp.fc1.bias": (mlp_ratio * c,),
                     block + "mlp.fc2.weight": (c, mlp_ratio * c, 1, 1), block + "mlp.fc2.bias": (c,),
                     block + "layer_scale_1": (c,), block + "layer_scale_2": (c,)})
    if i < len(depths) - 1:
      shapes.update({f"backbone.network.{2 * i + 1}.proj.weight": (dims[i + 1], c, 3, 3),
                     f"backbone.network.{2 * i + 1}.proj.bias": (dims[i + 1],)})
  shapes.update({"backbone.norm6.weight": (dims[-1],), "backbone.norm6.bias": (dims[-1],),
                 "head.fc.weight": (num_classes, dims[-1]), "head.fc.bias": (num_classes,)})
  return shapes


def with_prefix(state, prefix="backbone."):
  """mmcv's ``_load_checkpoint_with_prefix``: the keys under ``prefix``, without it."""
  return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize("family", ["ConvNeXt", "PoolFormer"])
def test_mmcls_classifier_weights(tmp_path, family):
  if family == "ConvNeXt":
    cls, arch = ConvNeXt, {"depths": (1, 1, 2, 1), "channels": (8, 16, 24, 32)}
    model = ConvNeXt(arch=arch, out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
    release, norms = random_state(convnext_shapes(**arch)), ("norm0", "norm1", "norm2")
  else:
    cls, arch = PoolFormer, {"layers": (1, 1, 2, 1), "embed_dims": (8, 16, 24, 32)}
    model = PoolFormer(arch=arch, out_indices=(0, 2, 4, 6))
    release, norms = random_state(poolformer_shapes(arch["layers"], arch["embed_dims"])), ("norm0", "norm2", "norm4")
  variables = init(model)
  got = convert_backbone_checkpoint(save(tmp_path, release), variables, cls)
  assert_same_leaves(got, mmseg_loads(cls, with_prefix(release), variables, left_at_init=norms))


# ---- STDCNet / STDCContextPathNet: MichaelFan01/STDC-Seg ------------------------------------

STDC_STAGE_BLOCKS = {"STDCNet1": (2, 2, 2), "STDCNet2": (4, 5, 3)}


def stdc_shapes(stdc_type, base, num_classes=10):
  """Key shapes of the authors' ``STDCNet813`` / ``STDCNet1446`` ('cat', block_num=4) and the
  lists of ``features`` indices their aliases ``x2`` ... ``x32`` hold (nets/stdcnet.py)."""
  def conv_x(prefix, cin, cout, kernel=3):
    return {prefix + "conv.weight": (cout, cin, kernel, kernel), prefix + "bn.weight": (cout,),
            prefix + "bn.bias": (cout,), prefix + "bn.running_mean": (cout,),
            prefix + "bn.running_var": (cout,), prefix + "bn.num_batches_tracked": ()}

  shapes = {**conv_x("features.0.", 3, base // 2), **conv_x("features.1.", base // 2, base)}
  n, cin = 2, base
  for i, blocks in enumerate(STDC_STAGE_BLOCKS[stdc_type]):
    cout = base * 2 ** (i + 2)
    for j in range(blocks):
      block = f"features.{n}."
      shapes.update(conv_x(block + "conv_list.0.", cin, cout // 2, 1))
      shapes.update(conv_x(block + "conv_list.1.", cout // 2, cout // 4))
      shapes.update(conv_x(block + "conv_list.2.", cout // 4, cout // 8))
      shapes.update(conv_x(block + "conv_list.3.", cout // 8, cout // 8))
      if j == 0:
        shapes.update({block + "avd_layer.0.weight": (cout // 2, 1, 3, 3),
                       block + "avd_layer.1.weight": (cout // 2,), block + "avd_layer.1.bias": (cout // 2,),
                       block + "avd_layer.1.running_mean": (cout // 2,),
                       block + "avd_layer.1.running_var": (cout // 2,),
                       block + "avd_layer.1.num_batches_tracked": ()})
      n, cin = n + 1, cout
  last = max(1024, base * 16)
  shapes.update(conv_x("conv_last.", base * 16, last, 1))
  shapes.update({"fc.weight": (last, last), "bn.weight": (last,), "bn.bias": (last,),
                 "bn.running_mean": (last,), "bn.running_var": (last,), "bn.num_batches_tracked": (),
                 "linear.weight": (num_classes, last)})
  ends = (1, 2, 4, 6, n) if stdc_type == "STDCNet1" else (1, 2, 6, 11, n)
  aliases = {f"x{2 ** (a + 1)}": list(range(ends[a - 1] if a else 0, ends[a])) for a in range(5)}
  return shapes, aliases


def stdc_release(stdc_type, base):
  """The authors' state_dict: ``x2`` ... ``x32`` are ``nn.Sequential`` views of ``features``
  slices, so their keys hold the same tensors."""
  shapes, aliases = stdc_shapes(stdc_type, base)
  state = random_state(shapes)
  for alias, features in aliases.items():
    for position, n in enumerate(features):
      state.update({k.replace(f"features.{n}.", f"{alias}.{position}.", 1): v for k, v in state.items()
                    if k.startswith(f"features.{n}.")})
  return state


def stdc2mmseg(stdc_type, ckpt):
  """mmseg's tools/model_converters/stdc2mmseg.py ``convert_stdc1`` / ``convert_stdc2`` (the
  same but for the stage list and ``'features.' in k``), the branches an ImageNet file reaches
  as written there (``cp.``, arm, head, ffm and conv_out are the segmentation model's)."""
  stage_lst = (["0", "1", "2.0", "2.1", "3.0", "3.1", "4.0", "4.1"] if stdc_type == "STDCNet1" else
               ["0", "1", "2.0", "2.1", "2.2", "2.3", "3.0", "3.1", "3.2", "3.3", "3.4", "4.0", "4.1", "4.2"])
  new_state_dict = {}
  for k, v in ckpt.items():
    ori_k, flag = k, False
    if (k.startswith("features.") if stdc_type == "STDCNet1" else "features." in k):
      num_layer = int(k.split(".")[1])
      k = k.replace("features." + str(num_layer) + ".", "stages." + stage_lst[num_layer] + ".")
      flag = True
    if "conv_list" in k:
      k = k.replace("conv_list", "layers")
      flag = True
    if "avd_layer." in k:
      if "avd_layer.0" in k:
        k = k.replace("avd_layer.0", "avg_pool.conv")
      elif "avd_layer.1" in k:
        k = k.replace("avd_layer.1", "avg_pool.bn")
      flag = True
    if "conv_last" in k:
      k = k.replace("conv_last", "final_conv")
      flag = True
    if "x" in k:
      flag = False
    if flag:
      new_state_dict[k] = ckpt[ori_k]
  return new_state_dict


@pytest.mark.parametrize("stdc_type, context_path", [("STDCNet1", False), ("STDCNet2", True)])
def test_stdc_loads_authors_imagenet_weights(tmp_path, stdc_type, context_path):
  base = 8
  backbone = dict(stdc_type=stdc_type, in_channels=3, channels=(4, 8, 32, 64, 128), bottleneck_type="cat",
                  norm_cfg=dict(type="BN", requires_grad=True), act_cfg=dict(type="ReLU"))
  if context_path:  # its rules depend on its backbone_cfg: the config is passed as the trainer does
    cfg = dict(backbone_cfg=dict(backbone, type="STDCNet"), last_in_channels=(128, 64), out_channels=8,
               ffm_cfg=dict(in_channels=40, out_channels=16, scale_factor=4))
    cls, model, backbone_arg = STDCContextPathNet, STDCContextPathNet(**cfg), dict(cfg, type="STDCContextPathNet")
  else:  # with the final conv, which a context path's STDCNet does not have
    cls, model = STDCNet, STDCNet(**backbone, with_final_conv=True)
    backbone_arg = cls
  variables = init(model, 64)
  release = stdc_release(stdc_type, base)
  got = convert_backbone_checkpoint(save(tmp_path, release, "STDCNet.pth"), variables, backbone_arg)
  converted = stdc2mmseg(stdc_type, release)
  assert "stages.2.0.avg_pool.conv.weight" in converted and not any("x" in k for k in converted)
  # mmseg's published files (stdc1_20220308, stdc2_20220308) name the avd_layer ``downsample``,
  # mmseg's STDCModule's name (open-mmlab/mmsegmentation#1418 lists their keys).
  converted = published = {k.replace(".avg_pool.", ".downsample."): v for k, v in converted.items()}
  if context_path:  # mmseg's configs load them into backbone_cfg; the final conv is unused
    converted = {"backbone." + k: v for k, v in converted.items() if not k.startswith("final_conv.")}
    want = mmseg_loads(cls, converted, variables, left_at_init=("arms", "convs", "conv_avg", "ffm"))
  else:
    want = mmseg_loads(cls, converted, variables)
  assert_same_leaves(got, want)
  assert_same_leaves(convert_backbone_checkpoint(save(tmp_path, published, "stdc_20220308.pth"), variables,
                                                 backbone_arg), want)


# ---- MobileNetV2 / V3: torchvision's ImageNet classifiers, mmcls's MobileNetV2 ---------------

def bn(prefix, channels):
  return {prefix + "weight": (channels,), prefix + "bias": (channels,), prefix + "running_mean": (channels,),
          prefix + "running_var": (channels,), prefix + "num_batches_tracked": ()}


def divisible(value, divisor=8):
  """torchvision's ``_make_divisible``."""
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * value else new


def torchvision_v2_shapes(width_mult, num_classes=10):
  """Key shapes of torchvision's ``mobilenet_v2(width_mult=...)`` (mobilenetv2.py)."""
  settings = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
  cin = divisible(32 * width_mult)
  shapes = {"features.0.0.weight": (cin, 3, 3, 3), **bn("features.0.1.", cin)}
  n = 1
  for t, c, blocks in settings:
    cout = divisible(c * width_mult)
    for _ in range(blocks):
      hidden, block = int(round(cin * t)), f"features.{n}.conv."
      k = 0
      if t != 1:
        shapes.update({block + "0.0.weight": (hidden, cin, 1, 1), **bn(block + "0.1.", hidden)})
        k = 1
      shapes.update({block + f"{k}.0.weight": (hidden, 1, 3, 3), **bn(block + f"{k}.1.", hidden),
                     block + f"{k + 1}.weight": (cout, hidden, 1, 1), **bn(block + f"{k + 2}.", cout)})
      cin, n = cout, n + 1
  last = divisible(1280 * max(1.0, width_mult))
  shapes.update({f"features.{n}.0.weight": (last, cin, 1, 1), **bn(f"features.{n}.1.", last),
                 "classifier.1.weight": (num_classes, last), "classifier.1.bias": (num_classes,)})
  return shapes


# torchvision's _mobilenet_v3_conf: (kernel, expanded, out, use_se) per block, last conv, classifier.
TORCHVISION_V3 = {
    "large": (((3, 16, 16, 0), (3, 64, 24, 0), (3, 72, 24, 0), (5, 72, 40, 1), (5, 120, 40, 1),
               (5, 120, 40, 1), (3, 240, 80, 0), (3, 200, 80, 0), (3, 184, 80, 0), (3, 184, 80, 0),
               (3, 480, 112, 1), (3, 672, 112, 1), (5, 672, 160, 1), (5, 960, 160, 1), (5, 960, 160, 1)),
              1280),
    "small": (((3, 16, 16, 1), (3, 72, 24, 0), (3, 88, 24, 0), (5, 96, 40, 1), (5, 240, 40, 1),
               (5, 240, 40, 1), (5, 120, 48, 1), (5, 144, 48, 1), (5, 288, 96, 1), (5, 576, 96, 1),
               (5, 576, 96, 1)), 1024),
}


def torchvision_v3_shapes(arch, num_classes=10):
  """Key shapes of torchvision's ``mobilenet_v3_<arch>`` (mobilenetv3.py)."""
  blocks, hidden = TORCHVISION_V3[arch]
  shapes = {"features.0.0.weight": (16, 3, 3, 3), **bn("features.0.1.", 16)}
  cin = 16
  for i, (kernel, mid, cout, se) in enumerate(blocks, 1):
    block, n = f"features.{i}.block.", 0
    if mid != cin:
      shapes.update({block + "0.0.weight": (mid, cin, 1, 1), **bn(block + "0.1.", mid)})
      n = 1
    shapes.update({block + f"{n}.0.weight": (mid, 1, kernel, kernel), **bn(block + f"{n}.1.", mid)})
    if se:
      squeeze = divisible(mid // 4)
      n += 1
      shapes.update({block + f"{n}.fc1.weight": (squeeze, mid, 1, 1), block + f"{n}.fc1.bias": (squeeze,),
                     block + f"{n}.fc2.weight": (mid, squeeze, 1, 1), block + f"{n}.fc2.bias": (mid,)})
    shapes.update({block + f"{n + 1}.0.weight": (cout, mid, 1, 1), **bn(block + f"{n + 1}.1.", cout)})
    cin = cout
  last, final = len(blocks) + 1, 6 * cin
  shapes.update({f"features.{last}.0.weight": (final, cin, 1, 1), **bn(f"features.{last}.1.", final),
                 "classifier.0.weight": (hidden, final), "classifier.0.bias": (hidden,),
                 "classifier.3.weight": (num_classes, hidden), "classifier.3.bias": (num_classes,)})
  return shapes


def in_flax_layout(value):
  value = value.numpy()
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value


def check_mapping(got, release, mapping, skipped):
  """``mapping``'s keys landed on their Flax paths, every model leaf was filled and every key of
  ``release`` but the ``skipped`` ones (and BatchNorm's step counters) filled one."""
  flat = traverse_util.flatten_dict(got, sep="/")
  for key, path in mapping.items():
    np.testing.assert_array_equal(flat[path], in_flax_layout(release[key]), err_msg=f"{key} -> {path}")
  used = [k for k in release if not k.endswith("num_batches_tracked") and not k.startswith(skipped)]
  assert len(used) == len(flat)


def test_mobilenet_v2_loads_torchvision_weights(tmp_path):
  model = MobileNetV2(widen_factor=0.25)
  variables = init(model)
  release = random_state(torchvision_v2_shapes(0.25))
  got = convert_backbone_checkpoint(save(tmp_path, release), variables, MobileNetV2)
  check_mapping(got, release, {
      "features.0.0.weight": "params/conv1/conv/kernel",
      "features.0.1.running_mean": "batch_stats/conv1/bn/mean",
      "features.1.conv.0.0.weight": "params/layer1/0/conv/0/conv/kernel",  # expand_ratio 1: no expand
      "features.1.conv.1.weight": "params/layer1/0/conv/1/conv/kernel",
      "features.1.conv.2.bias": "params/layer1/0/conv/1/bn/bias",
      "features.3.conv.0.0.weight": "params/layer2/1/conv/0/conv/kernel",
      "features.3.conv.1.0.weight": "params/layer2/1/conv/1/conv/kernel",
      "features.3.conv.1.1.weight": "params/layer2/1/conv/1/bn/scale",
      "features.10.conv.2.weight": "params/layer4/3/conv/2/conv/kernel",
      "features.17.conv.3.running_var": "batch_stats/layer7/0/conv/2/bn/var",
  }, skipped=("features.18.", "classifier."))


def test_mobilenet_v2_loads_mmcls_weights(tmp_path):
  model = MobileNetV2(widen_factor=0.25)
  variables = init(model)
  mmseg_named = to_state_dict(variables)
  # mmcls's ImageClassifier: the backbone (mmseg's names, plus the last 1x1 conv ``conv2``) and head.
  release = {"backbone." + k: torch.from_numpy(np.asarray(v) + 1) for k, v in mmseg_named.items()}
  release.update(random_state({"backbone.conv2.conv.weight": (1280, 80, 1, 1), **bn("backbone.conv2.bn.", 1280),
                               "head.fc.weight": (10, 1280), "head.fc.bias": (10,)}))
  got = convert_backbone_checkpoint(save(tmp_path, release), variables, MobileNetV2)
  # mmcv's mmcls:// loader keeps the backbone. keys without the prefix; strict=False drops conv2.
  assert_same_leaves(got, mmseg_loads(MobileNetV2, {k: v for k, v in with_prefix(release).items()
                                                    if not k.startswith("conv2.")}, variables))


@pytest.mark.parametrize("arch, mapping", [
    ("large", {"features.0.0.weight": "params/layer0/conv/kernel",
               "features.1.block.0.0.weight": "params/layer1/depthwise_conv/conv/kernel",
               "features.1.block.1.1.running_var": "batch_stats/layer1/linear_conv/bn/var",
               "features.2.block.0.0.weight": "params/layer2/expand_conv/conv/kernel",
               "features.4.block.1.0.weight": "params/layer4/depthwise_conv/conv/kernel",
               "features.4.block.2.fc1.weight": "params/layer4/se/conv1/conv/kernel",
               "features.4.block.2.fc2.bias": "params/layer4/se/conv2/conv/bias",
               "features.4.block.3.0.weight": "params/layer4/linear_conv/conv/kernel",
               "features.7.block.2.1.weight": "params/layer7/linear_conv/bn/scale",
               "features.15.block.3.1.bias": "params/layer15/linear_conv/bn/bias",
               "features.16.0.weight": "params/layer16/conv/kernel"}),
    ("small", {"features.1.block.0.0.weight": "params/layer1/depthwise_conv/conv/kernel",
               "features.1.block.1.fc1.weight": "params/layer1/se/conv1/conv/kernel",
               "features.1.block.2.0.weight": "params/layer1/linear_conv/conv/kernel",
               "features.2.block.0.1.running_mean": "batch_stats/layer2/expand_conv/bn/mean",
               "features.2.block.2.0.weight": "params/layer2/linear_conv/conv/kernel",
               "features.11.block.2.fc2.weight": "params/layer11/se/conv2/conv/kernel",
               "features.12.1.bias": "params/layer12/bn/bias"}),
])
def test_mobilenet_v3_loads_torchvision_weights(tmp_path, arch, mapping):
  model = MobileNetV3(arch=arch, out_indices=(1, 3, 16) if arch == "large" else (0, 1, 12),
                      norm_cfg=dict(type="BN", eps=0.001))
  variables = init(model)
  release = random_state(torchvision_v3_shapes(arch))
  got = convert_backbone_checkpoint(save(tmp_path, release), variables, MobileNetV3)
  check_mapping(got, release, mapping, skipped=("classifier.",))


def test_checkpoint_of_another_release_names_the_file_and_the_mismatch(tmp_path):
  # The STDC-Seg authors' STDC1 file given to an STDC2 model: no source's rules fit it.
  backbone = dict(stdc_type="STDCNet2", in_channels=3, channels=(4, 8, 32, 64, 128), bottleneck_type="cat",
                  norm_cfg=dict(type="BN"), act_cfg=dict(type="ReLU"))
  variables = init(STDCNet(**backbone), 64)
  path = save(tmp_path, stdc_release("STDCNet1", 8), "STDCNet813M_73.91.pth")
  with pytest.raises(CheckpointMismatchError) as err:
    convert_backbone_checkpoint(path, variables, STDCNet)
  message = str(err.value)
  assert path in message
  # Under STDC2's rules STDC1's stage 3 (features.4) lands on stage 2's third module, 32 channels wide.
  assert "stdc2_imagenet: features.4.conv_list.0.conv.weight (as stages.2.2.layers.0.conv.weight)" in message
  assert "stdc1_imagenet:" in message and "mmseg:" in message
  # A Swin release given to a MiT backbone: each of MiT's sources names a key it cannot place.
  variables = init(MixVisionTransformer(embed_dims=4, num_layers=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)))
  path = save(tmp_path, random_state(swin_shapes(8, (2, 2, 1, 1), (1, 2, 2, 4), window=3)), "swin_tiny.pth")
  with pytest.raises(CheckpointMismatchError, match="swin_tiny.pth: no release of MixVisionTransformer") as err:
    convert_backbone_checkpoint(path, variables, MixVisionTransformer)
  assert "imagenet: unexpected key patch_embed.proj.weight" in str(err.value)
