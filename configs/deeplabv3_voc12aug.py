"""deeplabv3 on Pascal VOC 2012 + aug: mmseg's configs/deeplabv3/deeplabv3_<variant>_voc12aug.py, one variant string each.

  python main.py --config=configs/deeplabv3_voc12aug.py:r50-d8_512x512_20k --workdir=work_dirs/deeplabv3_r50-d8_512x512_20k_voc12aug

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected results: mmseg's published mIoU for the same variant (README.md, 'Model zoo').
"""
from configs import common

VARIANTS = ("r50-d8_512x512_20k", "r101-d8_512x512_20k", "r50-d8_512x512_40k", "r101-d8_512x512_40k")


def get_config(variant: str = "r50-d8_512x512_20k"):
  return common.mmseg_config("deeplabv3", "voc12aug", variant, VARIANTS)
