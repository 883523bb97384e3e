"""DeepLabV3 on COCO-Stuff 10k: mmseg's configs/deeplabv3/deeplabv3_<variant>_coco-stuff10k.py by variant.

  python main.py --config=configs/deeplabv3_coco_stuff10k.py:r50-d8_512x512_4x4_20k --workdir=work_dirs/deeplabv3_r50-d8_512x512_4x4_20k_coco-stuff10k

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3/deeplabv3.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x512_4x4_20k: mIoU 34.66.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x512_4x4_20k"):
  return zoo.shim_config("deeplabv3", "coco-stuff10k", variant)
