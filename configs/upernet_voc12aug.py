"""upernet on Pascal VOC 2012 + aug: mmseg's configs/upernet/upernet_<variant>_voc12aug.py, one variant string each.

  python main.py --config=configs/upernet_voc12aug.py:r50_512x512_20k --workdir=work_dirs/upernet_r50_512x512_20k_voc12aug

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected results: mmseg's published mIoU for the same variant (README.md, 'Model zoo').
"""
from configs import common

VARIANTS = ("r50_512x512_20k", "r101_512x512_20k", "r50_512x512_40k", "r101_512x512_40k")


def get_config(variant: str = "r50_512x512_20k"):
  return common.mmseg_config("upernet", "voc12aug", variant, VARIANTS)
