"""deeplabv3 on Pascal VOC 2012 + SBD aug: mmseg's configs/deeplabv3/deeplabv3_<variant>_voc12aug.py, one variant string each.

  python main.py --config=configs/deeplabv3_voc12aug.py:r50-d8_512x512_20k --workdir=work_dirs/deeplabv3_r50-d8_512x512_20k_voc12aug

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_20k: 76.17).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_20k": 76.17,
    "r101-d8_512x512_20k": 78.70,
    "r50-d8_512x512_40k": 77.68,
    "r101-d8_512x512_40k": 77.92,
}


def get_config(variant: str = "r50-d8_512x512_20k"):
  return common.mmseg_config("deeplabv3", "voc12aug", variant, PUBLISHED_MIOU)
