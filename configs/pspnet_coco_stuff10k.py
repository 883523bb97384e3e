"""pspnet on COCO-Stuff 10k: mmseg's configs/pspnet/pspnet_<variant>_coco-stuff10k.py, one variant string each.

  python main.py --config=configs/pspnet_coco_stuff10k.py:r50-d8_512x512_4x4_20k --workdir=work_dirs/pspnet_r50-d8_512x512_4x4_20k_coco-stuff10k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_4x4_20k: 35.69).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_4x4_20k": 35.69,
    "r101-d8_512x512_4x4_20k": 37.26,
    "r50-d8_512x512_4x4_40k": 36.33,
    "r101-d8_512x512_4x4_40k": 37.76,
}


def get_config(variant: str = "r50-d8_512x512_4x4_20k"):
  return common.mmseg_config("pspnet", "coco-stuff10k", variant, PUBLISHED_MIOU)
