"""UPerNet on Cityscapes: mmseg's configs/upernet/upernet_<variant>_cityscapes.py by variant.

  python main.py --config=configs/upernet_cityscapes.py:r50_512x1024_40k --workdir=work_dirs/upernet_r50_512x1024_40k_cityscapes

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/upernet/upernet.yml).
Data: README.md, "Datasets".
Expected result: r50_512x1024_40k: mIoU 77.10.
"""
from configs import zoo


def get_config(variant: str = "r50_512x1024_40k"):
  return zoo.shim_config("upernet", "cityscapes", variant)
