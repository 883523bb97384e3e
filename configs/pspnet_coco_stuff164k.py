"""pspnet on COCO-Stuff 164k: mmseg's configs/pspnet/pspnet_<variant>_coco-stuff164k.py, one variant string each.

  python main.py --config=configs/pspnet_coco_stuff164k.py:r50-d8_512x512_4x4_80k --workdir=work_dirs/pspnet_r50-d8_512x512_4x4_80k_coco-stuff164k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_4x4_80k: 38.80).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_4x4_80k": 38.80,
    "r101-d8_512x512_4x4_80k": 40.34,
    "r50-d8_512x512_4x4_160k": 39.64,
    "r101-d8_512x512_4x4_160k": 41.28,
    "r50-d8_512x512_4x4_320k": 40.53,
    "r101-d8_512x512_4x4_320k": 41.95,
}


def get_config(variant: str = "r50-d8_512x512_4x4_80k"):
  return common.mmseg_config("pspnet", "coco-stuff164k", variant, PUBLISHED_MIOU)
