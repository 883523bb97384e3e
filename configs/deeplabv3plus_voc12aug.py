"""deeplabv3plus on Pascal VOC 2012 + SBD aug: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_voc12aug.py, one variant string each.

  python main.py --config=configs/deeplabv3plus_voc12aug.py:r50-d8_512x512_20k --workdir=work_dirs/deeplabv3plus_r50-d8_512x512_20k_voc12aug

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_20k: 75.93).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3plus/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_20k": 75.93,
    "r101-d8_512x512_20k": 77.22,
    "r50-d8_512x512_40k": 76.81,
    "r101-d8_512x512_40k": 78.62,
}


def get_config(variant: str = "r50-d8_512x512_20k"):
  return common.mmseg_config("deeplabv3plus", "voc12aug", variant, PUBLISHED_MIOU)
