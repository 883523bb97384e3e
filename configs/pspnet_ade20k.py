"""pspnet on ADE20K: mmseg's configs/pspnet/pspnet_<variant>_ade20k.py, one variant string each.

  python main.py --config=configs/pspnet_ade20k.py:r50-d8_512x512_80k --workdir=work_dirs/pspnet_r50-d8_512x512_80k_ade20k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_80k: 41.13).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_80k": 41.13,
    "r101-d8_512x512_80k": 43.57,
    "r50-d8_512x512_160k": 42.48,
    "r101-d8_512x512_160k": 44.39,
}


def get_config(variant: str = "r50-d8_512x512_80k"):
  return common.mmseg_config("pspnet", "ade20k", variant, PUBLISHED_MIOU)
