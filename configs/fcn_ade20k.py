"""fcn on ADE20K: mmseg's configs/fcn/fcn_<variant>_ade20k.py, one variant string each.

  python main.py --config=configs/fcn_ade20k.py:r50-d8_512x512_80k --workdir=work_dirs/fcn_r50-d8_512x512_80k_ade20k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_80k: 35.94).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/fcn/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_80k": 35.94,
    "r101-d8_512x512_80k": 39.61,
    "r50-d8_512x512_160k": 36.10,
    "r101-d8_512x512_160k": 39.91,
}


def get_config(variant: str = "r50-d8_512x512_80k"):
  return common.mmseg_config("fcn", "ade20k", variant, PUBLISHED_MIOU)
