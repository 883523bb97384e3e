"""deeplabv3 on COCO-Stuff 164k: mmseg's configs/deeplabv3/deeplabv3_<variant>_coco-stuff164k.py, one variant string each.

  python main.py --config=configs/deeplabv3_coco_stuff164k.py:r50-d8_512x512_4x4_80k --workdir=work_dirs/deeplabv3_r50-d8_512x512_4x4_80k_coco-stuff164k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_4x4_80k: 39.38).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_4x4_80k": 39.38,
    "r101-d8_512x512_4x4_80k": 40.87,
    "r50-d8_512x512_4x4_160k": 41.09,
    "r101-d8_512x512_4x4_160k": 41.82,
    "r50-d8_512x512_4x4_320k": 41.37,
    "r101-d8_512x512_4x4_320k": 42.61,
}


def get_config(variant: str = "r50-d8_512x512_4x4_80k"):
  return common.mmseg_config("deeplabv3", "coco-stuff164k", variant, PUBLISHED_MIOU)
