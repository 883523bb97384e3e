"""DeepLabV3+ on Pascal Context (60 classes): mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_pascal_context.py by variant.

  python main.py --config=configs/deeplabv3plus_pascal_context.py:r101-d8_480x480_40k --workdir=work_dirs/deeplabv3plus_r101-d8_480x480_40k_pascal_context

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3plus/deeplabv3plus.yml).
Data: README.md, "Datasets".
Expected result: r101-d8_480x480_40k: mIoU 47.30.
"""
from configs import zoo


def get_config(variant: str = "r101-d8_480x480_40k"):
  return zoo.shim_config("deeplabv3plus", "pascal_context", variant)
