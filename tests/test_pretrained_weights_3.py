"""The pretrained ImageNet ResNet that mmseg's BiSeNetV1 and ICNet in1k-pre configs name on the
wrapped network (``backbone_cfg.init_cfg=Pretrained``), through the trainer's loading path, and
the pretrained keys a resumed run may change.

mmcv initialises a wrapper module by module: the ResNet's own ``init_cfg`` loads the file into
the ResNet submodule (``context_path.backbone`` / ``backbone``) with ``strict=False``, and every
other module keeps its initialisation. The expected values below apply mmseg's key -> parameter
convention by hand (OIHW -> HWIO kernels, BN weight/bias/running stats)."""
import jax
import numpy as np
import pytest
from flax import traverse_util

from segjax.config import to_plain
from segjax.models.backbones.bisenetv1 import BiSeNetV1
from segjax.models.backbones.icnet import ICNet
from segjax.train import loop, workdir as workdir_lib

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)


def rand(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


def resnet18_imagenet_state(stem: int, base: int, deep_stem: bool, num_classes: int = 10) -> dict:
  """An ImageNet ResNet-18 classifier's state_dict as mmcv's ResNet / ResNetV1c names it (the
  V1c stem: conv 3 -> stem/2, stem/2 -> stem/2, stem/2 -> stem, each with a BN), with ``fc``."""
  state = {}

  def conv(name, out_ch, in_ch, k):
    state[f"{name}.weight"] = rand(out_ch, in_ch, k, k)

  def bn(name, ch):
    state.update({f"{name}.weight": rand(ch), f"{name}.bias": rand(ch), f"{name}.running_mean": rand(ch),
                  f"{name}.running_var": RNG.uniform(0.5, 2, ch).astype(np.float32),
                  f"{name}.num_batches_tracked": np.array(7)})

  if deep_stem:
    conv("stem.0", stem // 2, 3, 3), bn("stem.1", stem // 2)
    conv("stem.3", stem // 2, stem // 2, 3), bn("stem.4", stem // 2)
    conv("stem.6", stem, stem // 2, 3), bn("stem.7", stem)
  else:
    conv("conv1", stem, 3, 7), bn("bn1", stem)
  inplanes = stem
  for i in range(4):
    planes = base * 2 ** i
    for j in range(2):  # BasicBlocks; the first one downsamples when the shape changes
      block = f"layer{i + 1}.{j}"
      conv(f"{block}.conv1", planes, inplanes if j == 0 else planes, 3), bn(f"{block}.bn1", planes)
      conv(f"{block}.conv2", planes, planes, 3), bn(f"{block}.bn2", planes)
      if j == 0 and (i > 0 or inplanes != planes):
        conv(f"{block}.downsample.0", planes, inplanes, 1), bn(f"{block}.downsample.1", planes)
    inplanes = planes
  state["fc.weight"], state["fc.bias"] = rand(num_classes, inplanes), rand(num_classes)
  return state


def save(tmp_path, state, name):
  path = str(tmp_path / name)
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, path)
  return path


def where_mmseg_puts(key: str, value) -> tuple:
  """(collection, Flax path) of an mmseg state_dict key."""
  module, leaf = key.rsplit(".", 1)
  collection, flax_leaf = {"weight": ("params", "kernel" if value.ndim == 4 else "scale"),
                           "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
                           "running_var": ("batch_stats", "var")}[leaf]
  return collection, (*module.split("."), flax_leaf)


def train_state(model) -> loop.TrainState:
  """Random values in the model's shapes (the segmentor's backbone), a head beside it."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 64, 64, 3), np.float32)))
  fill = lambda tree: jax.tree.map(lambda s: jax.device_put(rand(*s.shape)), tree)
  return loop.TrainState(step=0, params={"backbone": fill(shapes["params"]), "decode_head": {"w": rand(3)}},
                         batch_stats={"backbone": fill(shapes["batch_stats"])}, opt_state=None, rng=None)


def check_loaded(loaded, state, release, prefix, not_in_release=()):
  """Every release key (but ``fc`` and ``not_in_release``) is at ``prefix`` in the backbone;
  every other parameter and statistic keeps its value."""
  want = {"params": traverse_util.flatten_dict(state.params["backbone"]),
          "batch_stats": traverse_util.flatten_dict(state.batch_stats["backbone"])}
  for key, value in release.items():
    if key.startswith(("fc.", *not_in_release)) or key.endswith("num_batches_tracked"):
      continue
    collection, path = where_mmseg_puts(key, value)
    path = (*prefix, *path)
    assert path in want[collection], (key, path)
    want[collection][path] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
  got = {"params": traverse_util.flatten_dict(loaded.params["backbone"]),
         "batch_stats": traverse_util.flatten_dict(loaded.batch_stats["backbone"])}
  for collection in want:
    assert got[collection].keys() == want[collection].keys()
    for path, value in want[collection].items():
      np.testing.assert_array_equal(np.asarray(got[collection][path]), value, err_msg="/".join(path))
  np.testing.assert_array_equal(loaded.params["decode_head"]["w"], state.params["decode_head"]["w"])


def load_through_trainer(model_cfg, state):
  key, path, prefix = loop._backbone_pretrained(model_cfg)
  assert key == "model.backbone.backbone_cfg.init_cfg.checkpoint"
  return loop._load_pretrained_backbone(state, path, model_cfg["backbone"], prefix, key)


def test_icnet_resnet_v1c_imagenet_file_on_backbone_cfg(tmp_path):
  tiny = ICNet.TINY  # ResNetV1c depth 18, stem and base 8, as icnet_r18-d8_in1k-pre's ResNet
  state = train_state(ICNet(**tiny))
  release = resnet18_imagenet_state(stem=8, base=8, deep_stem=True)
  pth = save(tmp_path, release, "resnet18_v1c.pth")
  backbone = dict(tiny, type="ICNet", backbone_cfg=dict(
      tiny["backbone_cfg"], init_cfg=dict(type="Pretrained", checkpoint=pth)))
  check_loaded(load_through_trainer(dict(backbone=backbone), state), state, release, ("backbone",))
  # An mmcls classifier's file, its ResNet under backbone. (init_cfg prefix='backbone.').
  mmcls = save(tmp_path, {**{f"backbone.{k}": v for k, v in release.items()}, "head.fc.weight": rand(10, 64)},
               "mmcls_resnet18.pth")
  backbone["backbone_cfg"]["init_cfg"] = dict(type="Pretrained", checkpoint=mmcls, prefix="backbone.")
  check_loaded(load_through_trainer(dict(backbone=backbone), state), state, release, ("backbone",))
  # A ResNet of other widths fits no release; the error names the key and the file.
  other = save(tmp_path, resnet18_imagenet_state(stem=16, base=8, deep_stem=True), "resnet18_wide.pth")
  backbone["backbone_cfg"]["init_cfg"] = dict(type="Pretrained", checkpoint=other)
  with pytest.raises(ValueError, match=r"model.backbone.backbone_cfg.init_cfg.checkpoint: .*resnet18_wide.pth: "
                                       r"no release of ICNet weights fits(.|\n)*imagenet: .*stem"):
    load_through_trainer(dict(backbone=backbone), state)


def test_bisenetv1_resnet_imagenet_files_on_backbone_cfg(tmp_path):
  tiny = BiSeNetV1.TINY  # its backbone_cfg is a ResNet (V1b stem) of depth 18, stem and base 4
  state = train_state(BiSeNetV1(**tiny))
  wrapped = ("context_path", "backbone")
  # A V1b file (conv1/bn1 stem) loads whole.
  release = resnet18_imagenet_state(stem=4, base=4, deep_stem=False)
  backbone = dict(tiny, type="BiSeNetV1", backbone_cfg=dict(
      tiny["backbone_cfg"], init_cfg=dict(type="Pretrained", checkpoint=save(tmp_path, release, "r18.pth"))))
  check_loaded(load_through_trainer(dict(backbone=backbone), state), state, release, wrapped)
  # mmseg's bisenetv1_r18-d32_in1k-pre configs name open-mmlab://resnet18_v1c (a deep stem) for
  # the V1b ResNet: mmcv's strict=False load ignores the file's stem.* and leaves conv1/bn1 at
  # their initialisation; the stages load.
  v1c = resnet18_imagenet_state(stem=4, base=4, deep_stem=True)
  backbone["backbone_cfg"]["init_cfg"]["checkpoint"] = save(tmp_path, v1c, "resnet18_v1c.pth")
  check_loaded(load_through_trainer(dict(backbone=backbone), state), state, v1c, wrapped,
               not_in_release=("stem.",))
  # The backbone's own pretrained= on a BiSeNetV1 segmentor checkpoint still reads it whole.
  segmentor = {f"backbone.context_path.backbone.{k}": v for k, v in release.items() if not k.startswith("fc.")}
  for path, value in traverse_util.flatten_dict(state.params["backbone"]).items():
    if path[:2] != wrapped:
      name = ".".join(path[:-1]) + (".bias" if path[-1] == "bias" else ".weight")
      segmentor[f"backbone.{name}"] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
  for path, value in traverse_util.flatten_dict(state.batch_stats["backbone"]).items():
    if path[:2] != wrapped:
      name = ".".join(path[:-1]) + {"mean": ".running_mean", "var": ".running_var"}[path[-1]]
      segmentor[f"backbone.{name}"] = value
  seg_file = save(tmp_path, segmentor, "bisenetv1_segmentor.pth")
  loaded = loop._load_pretrained_backbone(state, seg_file, dict(tiny, type="BiSeNetV1"), None,
                                          "model.backbone.pretrained")
  check_loaded(loaded, state, {k[len("backbone.context_path.backbone."):]: v for k, v in segmentor.items()
                               if k.startswith("backbone.context_path.backbone.")}, wrapped)


def test_backbone_pretrained_keys_are_resumable():
  """A resumed run restores its checkpoint and loads no pretrained weights (train.loop), so
  each form of them may change or go; the network's own settings may not."""
  from configs import mmseg as mmseg_configs
  cfg = mmseg_configs.get_config("bisenetv1/bisenetv1_r18-d32_in1k-pre_4x4_1024x1024_160k_cityscapes.py")
  saved = workdir_lib._as_json(cfg)
  assert saved["model"]["backbone"]["backbone_cfg"]["init_cfg"]["checkpoint"] == "open-mmlab://resnet18_v1c"
  with cfg.unlocked():
    cfg.model.backbone.backbone_cfg.init_cfg = dict(type="Pretrained", checkpoint="/data/r18.pth", prefix="backbone.")
    cfg.model.backbone.backbone_cfg.pretrained = "/data/other.pth"
    cfg.model.backbone.init_cfg = [dict(type="Kaiming", layer="Conv2d")]
    cfg.model.backbone.pretrained = "/data/other.pth"
    cfg.model.pretrained = "/data/other.pth"
  assert workdir_lib.config_differences(saved, cfg) == []
  cfg.model.backbone.backbone_cfg.depth = 34
  assert [k for k, *_ in workdir_lib.config_differences(saved, cfg)] == ["model.backbone.backbone_cfg.depth"]


def test_nested_rules_place_a_release_under_the_prefix():
  """A family's renames, transforms and keep_initial apply to its own keys below the prefix; the
  wrapper's modules keep their values; the nested network's parameters must all be given."""
  from segjax.convert import CheckpointMismatchError, CheckpointRules, convert_state_dict, nested_rules
  release = CheckpointRules(skip=(r"^head\.",), renames=((r"^blk\.", "block."),),
                            transforms=((r"^block\.w$", lambda k, v, shape: {k: v * 2}),),
                            keep_initial=(r"^norm$",))
  target = {"params": {"outer": {"inner": {"block": {"w": np.zeros(3, np.float32)},
                                           "norm": {"scale": np.ones(3, np.float32)},
                                           "pos": np.zeros(2, np.float32)},
                                 "own": {"bias": np.full(3, 5, np.float32)}}}}
  state = {"blk.w": np.arange(3, dtype=np.float32), "pos": np.ones(2, np.float32), "head.fc": np.zeros(1)}
  out = convert_state_dict(state, target, {"": nested_rules(release, "outer.inner.")})["params"]["outer"]
  np.testing.assert_array_equal(out["inner"]["block"]["w"], [0, 2, 4])  # renamed, then transformed
  np.testing.assert_array_equal(out["inner"]["pos"], [1, 1])
  np.testing.assert_array_equal(out["inner"]["norm"]["scale"], [1, 1, 1])  # the release's keep_initial
  np.testing.assert_array_equal(out["own"]["bias"], [5, 5, 5])  # the wrapper's own module
  with pytest.raises(CheckpointMismatchError, match=r"no checkpoint key:\s+params/outer/inner/pos$"):
    convert_state_dict({"blk.w": state["blk.w"]}, target, {"": nested_rules(release, "outer.inner.")})
  with pytest.raises(ValueError, match="'norm' is not anchored"):
    nested_rules(CheckpointRules(keep_initial=("norm",)), "outer.inner.")
