"""pspnet on Nighttime Driving (trained on Cityscapes): mmseg's configs/pspnet/pspnet_<variant>_night_driving.py, one variant string each.

  python main.py --config=configs/pspnet_night_driving.py:r50-d8_512x1024_40k --workdir=work_dirs/pspnet_r50-d8_512x1024_40k_night_driving

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x1024_40k: 23.02).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x1024_40k": 23.02,
    "r101-d8_512x1024_40k": 20.25,
    "r101b-d8_512x1024_80k": 22.25,
}


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return common.mmseg_config("pspnet", "night_driving", variant, PUBLISHED_MIOU)
