"""upernet on Pascal VOC 2012 + SBD aug: mmseg's configs/upernet/upernet_<variant>_voc12aug.py, one variant string each.

  python main.py --config=configs/upernet_voc12aug.py:r50_512x512_20k --workdir=work_dirs/upernet_r50_512x512_20k_voc12aug

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50_512x512_20k: 74.82).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/upernet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50_512x512_20k": 74.82,
    "r101_512x512_20k": 77.10,
    "r50_512x512_40k": 75.92,
    "r101_512x512_40k": 77.43,
}


def get_config(variant: str = "r50_512x512_20k"):
  return common.mmseg_config("upernet", "voc12aug", variant, PUBLISHED_MIOU)
