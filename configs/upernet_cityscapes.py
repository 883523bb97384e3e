"""upernet on Cityscapes: mmseg's configs/upernet/upernet_<variant>_cityscapes.py, one variant string each.

  python main.py --config=configs/upernet_cityscapes.py:r50_512x1024_40k --workdir=work_dirs/upernet_r50_512x1024_40k_cityscapes

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected results: mmseg's published mIoU for the same variant (README.md, 'Model zoo').
"""
from configs import common

VARIANTS = ("r50_512x1024_40k", "r101_512x1024_40k", "r50_512x1024_80k", "r101_512x1024_80k", "r50_769x769_40k", "r101_769x769_40k", "r50_769x769_80k", "r101_769x769_80k")


def get_config(variant: str = "r50_512x1024_40k"):
  return common.mmseg_config("upernet", "cityscapes", variant, VARIANTS)
