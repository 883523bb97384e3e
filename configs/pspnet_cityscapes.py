"""pspnet on Cityscapes: mmseg's configs/pspnet/pspnet_<variant>_cityscapes.py, one variant string each.

  python main.py --config=configs/pspnet_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/pspnet_r50-d8_512x1024_40k_cityscapes

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x1024_40k: 77.85).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x1024_40k": 77.85,
    "r101-d8_512x1024_40k": 78.34,
    "r50-d8_769x769_40k": 78.26,
    "r101-d8_769x769_40k": 79.08,
    "r18-d8_512x1024_80k": 74.87,
    "r50-d8_512x1024_80k": 78.55,
    "r101-d8_512x1024_80k": 79.76,
    "r18-d8_769x769_80k": 75.90,
    "r50-d8_769x769_80k": 79.59,
    "r101-d8_769x769_80k": 79.77,
    "r18b-d8_512x1024_80k": 74.23,
    "r50b-d8_512x1024_80k": 78.22,
    "r101b-d8_512x1024_80k": 79.69,
    "r18b-d8_769x769_80k": 74.92,
    "r50b-d8_769x769_80k": 78.50,
    "r101b-d8_769x769_80k": 78.87,
}


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return common.mmseg_config("pspnet", "cityscapes", variant, PUBLISHED_MIOU)
