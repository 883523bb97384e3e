"""fcn on Cityscapes: mmseg's configs/fcn/fcn_<variant>_cityscapes.py, one variant string each.

  python main.py --config=configs/fcn_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/fcn_r50-d8_512x1024_40k_cityscapes

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x1024_40k: 72.25).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/fcn/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x1024_40k": 72.25,
    "r101-d8_512x1024_40k": 75.45,
    "r50-d8_769x769_40k": 71.47,
    "r101-d8_769x769_40k": 73.93,
    "r18-d8_512x1024_80k": 71.11,
    "r50-d8_512x1024_80k": 73.61,
    "r101-d8_512x1024_80k": 75.13,
    "r18-d8_769x769_80k": 70.80,
    "r50-d8_769x769_80k": 72.64,
    "r101-d8_769x769_80k": 75.52,
    "r18b-d8_512x1024_80k": 70.24,
    "r50b-d8_512x1024_80k": 75.65,
    "r101b-d8_512x1024_80k": 77.37,
    "r18b-d8_769x769_80k": 69.66,
    "r50b-d8_769x769_80k": 73.83,
    "r101b-d8_769x769_80k": 77.02,
    "d6_r50-d16_512x1024_40k": 77.06,
    "d6_r50-d16_512x1024_80k": 77.27,
    "d6_r50-d16_769x769_40k": 76.82,
    "d6_r50-d16_769x769_80k": 77.04,
    "d6_r101-d16_512x1024_40k": 77.36,
    "d6_r101-d16_512x1024_80k": 78.46,
    "d6_r101-d16_769x769_40k": 77.28,
    "d6_r101-d16_769x769_80k": 78.06,
    "d6_r50b-d16_512x1024_80k": 76.99,
    "d6_r50b-d16_769x769_80k": 76.86,
    "d6_r101b-d16_512x1024_80k": 77.72,
    "d6_r101b-d16_769x769_80k": 77.34,
}


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return common.mmseg_config("fcn", "cityscapes", variant, PUBLISHED_MIOU)
