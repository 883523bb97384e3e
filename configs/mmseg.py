"""Any MMSegmentation config file, run as it is (model, data pipelines, optimizer, schedule,
evaluation from mmseg's own dicts; segjax.convert.mmseg_config translates them).

  python main.py --config=configs/mmseg.py:pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py --workdir=work_dirs/pspnet_r50-d8_512x1024_40k_cityscapes

The text after ':' is a path relative to configs/mmseg_configs (mmseg 0.30's config tree), a
bare config name looked up in every family folder (``pspnet_r50-d8_512x1024_40k_cityscapes``), or
the path of any mmseg-style ``.py`` file (absolute or relative to the current directory; its
``_base_`` paths are relative to it). tools/test.py, tools/print_config.py, ... and
``segjax.apis.init_segmentor`` also take such a file's path directly.

Expected result: the config's published mIoU, listed in configs/ZOO.md from mmseg's metafiles
(pspnet_r50-d8_512x1024_40k_cityscapes: 77.85). mmseg's ``pretrained='open-mmlab://...'`` names
must be fetched and given as a local path (``--config.model.pretrained=PATH``).
"""
from configs import zoo
from segjax.convert.mmseg_config import config_from_file


def get_config(spec: str | None = None):
  if not spec:
    raise ValueError("configs/mmseg.py needs an mmseg config after ':', e.g. "
                     "--config=configs/mmseg.py:pspnet/pspnet_r50-d8_512x1024_40k_cityscapes.py")
  return config_from_file(zoo.find(spec))
