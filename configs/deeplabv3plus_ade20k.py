"""DeepLabV3+ on ADE20K: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_ade20k.py by variant.

  python main.py --config=configs/deeplabv3plus_ade20k.py:r50-d8_512x512_80k --workdir=work_dirs/deeplabv3plus_r50-d8_512x512_80k_ade20k

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3plus/deeplabv3plus.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x512_80k: mIoU 42.72.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x512_80k"):
  return zoo.shim_config("deeplabv3plus", "ade20k", variant)
