"""pspnet on Pascal VOC 2012 + SBD aug: mmseg's configs/pspnet/pspnet_<variant>_voc12aug.py, one variant string each.

  python main.py --config=configs/pspnet_voc12aug.py:r50-d8_512x512_20k --workdir=work_dirs/pspnet_r50-d8_512x512_20k_voc12aug

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x512_20k: 76.78).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x512_20k": 76.78,
    "r101-d8_512x512_20k": 78.47,
    "r50-d8_512x512_40k": 77.29,
    "r101-d8_512x512_40k": 78.52,
}


def get_config(variant: str = "r50-d8_512x512_20k"):
  return common.mmseg_config("pspnet", "voc12aug", variant, PUBLISHED_MIOU)
