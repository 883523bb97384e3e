"""pspnet on ADE20K: mmseg's configs/pspnet/pspnet_<variant>_ade20k.py, one variant string each.

  python main.py --config=configs/pspnet_ade20k.py:r50-d8_512x512_80k --workdir=work_dirs/pspnet_r50-d8_512x512_80k_ade20k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected results: mmseg's published mIoU for the same variant (README.md, 'Model zoo').
"""
from configs import common

VARIANTS = ("r50-d8_512x512_80k", "r101-d8_512x512_80k", "r50-d8_512x512_160k", "r101-d8_512x512_160k")


def get_config(variant: str = "r50-d8_512x512_80k"):
  return common.mmseg_config("pspnet", "ade20k", variant, VARIANTS)
