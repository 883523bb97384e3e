"""pspnet on Cityscapes: mmseg's configs/pspnet/pspnet_<variant>_cityscapes.py, one variant string each.

  python main.py --config=configs/pspnet_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/pspnet_r50-d8_512x1024_40k_cityscapes

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected results: mmseg's published mIoU for the same variant (README.md, 'Model zoo').
"""
from configs import common

VARIANTS = ("r50-d8_512x1024_40k", "r101-d8_512x1024_40k", "r50-d8_769x769_40k", "r101-d8_769x769_40k", "r18-d8_512x1024_80k", "r50-d8_512x1024_80k", "r101-d8_512x1024_80k", "r18-d8_769x769_80k", "r50-d8_769x769_80k", "r101-d8_769x769_80k", "r18b-d8_512x1024_80k", "r50b-d8_512x1024_80k", "r101b-d8_512x1024_80k", "r18b-d8_769x769_80k", "r50b-d8_769x769_80k", "r101b-d8_769x769_80k")


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return common.mmseg_config("pspnet", "cityscapes", variant, VARIANTS)
