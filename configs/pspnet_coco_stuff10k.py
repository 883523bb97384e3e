"""PSPNet on COCO-Stuff 10k: mmseg's configs/pspnet/pspnet_<variant>_coco-stuff10k.py by variant.

  python main.py --config=configs/pspnet_coco_stuff10k.py:r50-d8_512x512_4x4_20k --workdir=work_dirs/pspnet_r50-d8_512x512_4x4_20k_coco-stuff10k

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/pspnet/pspnet.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x512_4x4_20k: mIoU 35.69.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x512_4x4_20k"):
  return zoo.shim_config("pspnet", "coco-stuff10k", variant)
