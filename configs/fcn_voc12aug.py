"""fcn on Pascal VOC 2012 + SBD aug: mmseg's configs/fcn/fcn_<variant>_voc12aug.py, one variant string each.

  python main.py --config=configs/fcn_voc12aug.py:r50-d8_512x512_20k --workdir=work_dirs/fcn_r50-d8_512x512_20k_voc12aug

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_20k: 67.08).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/fcn/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_20k": 67.08,
    "r101-d8_512x512_20k": 71.16,
    "r50-d8_512x512_40k": 66.97,
    "r101-d8_512x512_40k": 69.91,
}


def get_config(variant: str = "r50-d8_512x512_20k"):
  return common.mmseg_config("fcn", "voc12aug", variant, PUBLISHED_MIOU)
