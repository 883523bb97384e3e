"""DeepLabV3 on Pascal VOC 2012 + SBD aug: mmseg's configs/deeplabv3/deeplabv3_<variant>_voc12aug.py by variant.

  python main.py --config=configs/deeplabv3_voc12aug.py:r50-d8_512x512_20k --workdir=work_dirs/deeplabv3_r50-d8_512x512_20k_voc12aug

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3/deeplabv3.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x512_20k: mIoU 76.17.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x512_20k"):
  return zoo.shim_config("deeplabv3", "voc12aug", variant)
