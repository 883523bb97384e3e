"""UPerNet on Pascal VOC 2012 + SBD aug: mmseg's configs/upernet/upernet_<variant>_voc12aug.py by variant.

  python main.py --config=configs/upernet_voc12aug.py:r50_512x512_20k --workdir=work_dirs/upernet_r50_512x512_20k_voc12aug

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/upernet/upernet.yml).
Data: README.md, "Datasets".
Expected result: r50_512x512_20k: mIoU 74.82.
"""
from configs import zoo


def get_config(variant: str = "r50_512x512_20k"):
  return zoo.shim_config("upernet", "voc12aug", variant)
