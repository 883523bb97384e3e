"""ConvNeXt (mmcls): for now only its layer ids for mmseg's lr decay; the model lands later."""


def layer_id(name: str, num_layers: int) -> int:
  """mmseg's ``get_layer_id_for_convnext(name, num_layers)`` ('layer_wise' decay) of the
  parameter ``name`` (mmseg's dotted form); ``num_layers`` is ``paramwise_cfg.num_layers``."""
  if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
    return 0
  if name.startswith("backbone.downsample_layers"):
    return {0: 0, 1: 2, 2: 3}.get(int(name.split(".")[2]), num_layers)
  if name.startswith("backbone.stages"):
    stage, block = int(name.split(".")[2]), int(name.split(".")[3])
    return {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, num_layers)
  return num_layers + 1


def stage_id(name: str, num_layers: int) -> int:
  """mmseg's ``get_stage_id_for_convnext(name, num_layers + 2)`` ('stage_wise' decay)."""
  if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
    return 0
  if name.startswith("backbone.downsample_layers"):
    return 0
  if name.startswith("backbone.stages"):
    return int(name.split(".")[2]) + 1
  return num_layers + 1
