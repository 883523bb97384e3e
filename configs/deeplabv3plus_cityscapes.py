"""deeplabv3plus on Cityscapes: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_cityscapes.py, one variant string each.

  python main.py --config=configs/deeplabv3plus_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/deeplabv3plus_r50-d8_512x1024_40k_cityscapes

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x1024_40k: 79.61).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3plus/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x1024_40k": 79.61,
    "r101-d8_512x1024_40k": 80.21,
    "r50-d8_769x769_40k": 78.97,
    "r101-d8_769x769_40k": 79.46,
    "r18-d8_512x1024_80k": 76.89,
    "r50-d8_512x1024_80k": 80.09,
    "r101-d8_512x1024_80k": 80.97,
    "r18-d8_769x769_80k": 76.26,
    "r50-d8_769x769_80k": 79.83,
    "r101-d8_769x769_80k": 80.65,
    "r18b-d8_512x1024_80k": 75.87,
    "r50b-d8_512x1024_80k": 80.28,
    "r101b-d8_512x1024_80k": 80.16,
    "r18b-d8_769x769_80k": 76.36,
    "r50b-d8_769x769_80k": 79.41,
    "r101b-d8_769x769_80k": 79.88,
    "r101-d16-mg124_512x1024_40k": 79.09,
    "r101-d16-mg124_512x1024_80k": 79.90,
}


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return common.mmseg_config("deeplabv3plus", "cityscapes", variant, PUBLISHED_MIOU)
