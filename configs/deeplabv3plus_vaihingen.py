"""DeepLabV3+ on ISPRS Vaihingen: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_vaihingen.py by variant.

  python main.py --config=configs/deeplabv3plus_vaihingen.py:r18-d8_4x4_512x512_80k --workdir=work_dirs/deeplabv3plus_r18-d8_4x4_512x512_80k_vaihingen

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3plus/deeplabv3plus.yml).
Data: README.md, "Datasets".
Expected result: r18-d8_4x4_512x512_80k: mIoU 72.50.
"""
from configs import zoo


def get_config(variant: str = "r18-d8_4x4_512x512_80k"):
  return zoo.shim_config("deeplabv3plus", "vaihingen", variant)
