"""PSPNet on COCO-Stuff 164k: mmseg's configs/pspnet/pspnet_<variant>_coco-stuff164k.py by variant.

  python main.py --config=configs/pspnet_coco_stuff164k.py:r50-d8_512x512_4x4_80k --workdir=work_dirs/pspnet_r50-d8_512x512_4x4_80k_coco-stuff164k

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/pspnet/pspnet.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x512_4x4_80k: mIoU 38.80.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x512_4x4_80k"):
  return zoo.shim_config("pspnet", "coco-stuff164k", variant)
