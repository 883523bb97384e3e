"""UPerNet on ADE20K: mmseg's configs/upernet/upernet_<variant>_ade20k.py by variant.

  python main.py --config=configs/upernet_ade20k.py:r50_512x512_80k --workdir=work_dirs/upernet_r50_512x512_80k_ade20k

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/upernet/upernet.yml).
Data: README.md, "Datasets".
Expected result: r50_512x512_80k: mIoU 40.70.
"""
from configs import zoo


def get_config(variant: str = "r50_512x512_80k"):
  return zoo.shim_config("upernet", "ade20k", variant)
