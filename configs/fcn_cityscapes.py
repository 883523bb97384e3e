"""FCN on Cityscapes: mmseg's configs/fcn/fcn_<variant>_cityscapes.py by variant.

  python main.py --config=configs/fcn_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/fcn_r50-d8_512x1024_40k_cityscapes

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/fcn/fcn.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x1024_40k: mIoU 72.25.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return zoo.shim_config("fcn", "cityscapes", variant)
