"""deeplabv3 on ADE20K: mmseg's configs/deeplabv3/deeplabv3_<variant>_ade20k.py, one variant string each.

  python main.py --config=configs/deeplabv3_ade20k.py:r50-d8_512x512_80k --workdir=work_dirs/deeplabv3_r50-d8_512x512_80k_ade20k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_80k: 42.42).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_80k": 42.42,
    "r101-d8_512x512_80k": 44.08,
    "r50-d8_512x512_160k": 42.66,
    "r101-d8_512x512_160k": 45.00,
}


def get_config(variant: str = "r50-d8_512x512_80k"):
  return common.mmseg_config("deeplabv3", "ade20k", variant, PUBLISHED_MIOU)
