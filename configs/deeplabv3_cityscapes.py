"""deeplabv3 on Cityscapes: mmseg's configs/deeplabv3/deeplabv3_<variant>_cityscapes.py, one variant string each.

  python main.py --config=configs/deeplabv3_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/deeplabv3_r50-d8_512x1024_40k_cityscapes

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x1024_40k: 79.09).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x1024_40k": 79.09,
    "r101-d8_512x1024_40k": 77.12,
    "r50-d8_769x769_40k": 78.58,
    "r101-d8_769x769_40k": 79.27,
    "r18-d8_512x1024_80k": 76.70,
    "r50-d8_512x1024_80k": 79.32,
    "r101-d8_512x1024_80k": 80.20,
    "r18-d8_769x769_80k": 76.60,
    "r50-d8_769x769_80k": 79.89,
    "r101-d8_769x769_80k": 79.67,
    "r18b-d8_512x1024_80k": 76.26,
    "r50b-d8_512x1024_80k": 79.63,
    "r101b-d8_512x1024_80k": 80.01,
    "r18b-d8_769x769_80k": 76.63,
    "r50b-d8_769x769_80k": 78.80,
    "r101b-d8_769x769_80k": 79.41,
    "r101-d16-mg124_512x1024_40k": 76.71,
    "r101-d16-mg124_512x1024_80k": 78.36,
}


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return common.mmseg_config("deeplabv3", "cityscapes", variant, PUBLISHED_MIOU)
