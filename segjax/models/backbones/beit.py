"""BEiT (and MAE, its subclass in mmseg): for now only the layer ids for mmseg's lr decay; the model lands later."""


def layer_id(name: str, num_layers: int) -> int:
  """mmseg's ``get_layer_id_for_vit(name, num_layers + 2)`` ('layer_wise' decay) of the
  parameter ``name`` (mmseg's dotted form); ``num_layers`` is ``paramwise_cfg.num_layers``."""
  if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
    return 0
  if name.startswith("backbone.patch_embed"):
    return 0
  if name.startswith("backbone.layers"):
    return int(name.split(".")[2]) + 1
  return num_layers + 1
