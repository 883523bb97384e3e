"""deeplabv3plus on ADE20K: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_ade20k.py, one variant string each.

  python main.py --config=configs/deeplabv3plus_ade20k.py:r50-d8_512x512_80k --workdir=work_dirs/deeplabv3plus_r50-d8_512x512_80k_ade20k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_80k: 42.72).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3plus/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_80k": 42.72,
    "r101-d8_512x512_80k": 44.60,
    "r50-d8_512x512_160k": 43.95,
    "r101-d8_512x512_160k": 45.47,
}


def get_config(variant: str = "r50-d8_512x512_80k"):
  return common.mmseg_config("deeplabv3plus", "ade20k", variant, PUBLISHED_MIOU)
