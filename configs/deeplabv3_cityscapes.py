"""DeepLabV3 on Cityscapes: mmseg's configs/deeplabv3/deeplabv3_<variant>_cityscapes.py by variant.

  python main.py --config=configs/deeplabv3_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/deeplabv3_r50-d8_512x1024_40k_cityscapes

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3/deeplabv3.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x1024_40k: mIoU 79.09.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return zoo.shim_config("deeplabv3", "cityscapes", variant)
