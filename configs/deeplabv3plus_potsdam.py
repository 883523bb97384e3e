"""DeepLabV3+ on ISPRS Potsdam: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_potsdam.py by variant.

  python main.py --config=configs/deeplabv3plus_potsdam.py:r18-d8_512x512_80k --workdir=work_dirs/deeplabv3plus_r18-d8_512x512_80k_potsdam

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/deeplabv3plus/deeplabv3plus.yml).
Data: README.md, "Datasets".
Expected result: r18-d8_512x512_80k: mIoU 77.09.
"""
from configs import zoo


def get_config(variant: str = "r18-d8_512x512_80k"):
  return zoo.shim_config("deeplabv3plus", "potsdam", variant)
