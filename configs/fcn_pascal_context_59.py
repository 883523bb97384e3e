"""FCN on Pascal Context (59 classes): mmseg's configs/fcn/fcn_<variant>_pascal_context_59.py by variant.

  python main.py --config=configs/fcn_pascal_context_59.py:r101-d8_480x480_40k --workdir=work_dirs/fcn_r101-d8_480x480_40k_pascal_context_59

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/fcn/fcn.yml).
Data: README.md, "Datasets".
Expected result: r101-d8_480x480_40k: mIoU 48.42.
"""
from configs import zoo


def get_config(variant: str = "r101-d8_480x480_40k"):
  return zoo.shim_config("fcn", "pascal_context_59", variant)
