"""DeepLabV3 on COCO-Stuff 164k: mmseg's configs/deeplabv3/deeplabv3_<variant>_coco-stuff164k.py by variant.

  python main.py --config=configs/deeplabv3_coco_stuff164k.py:r50-d8_512x512_4x4_80k --workdir=work_dirs/deeplabv3_r50-d8_512x512_4x4_80k_coco-stuff164k

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3/deeplabv3.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x512_4x4_80k: mIoU 39.38.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x512_4x4_80k"):
  return zoo.shim_config("deeplabv3", "coco-stuff164k", variant)
