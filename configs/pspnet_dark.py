"""pspnet on Dark Zurich (trained on Cityscapes): mmseg's configs/pspnet/pspnet_<variant>_dark.py, one variant string each.

  python main.py --config=configs/pspnet_dark.py:r50-d8_512x1024_40k --workdir=work_dirs/pspnet_r50-d8_512x1024_40k_dark

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50-d8_512x1024_40k: 10.91).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50-d8_512x1024_40k": 10.91,
    "r101-d8_512x1024_40k": 10.16,
    "r101b-d8_512x1024_80k": 15.54,
}


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return common.mmseg_config("pspnet", "dark", variant, PUBLISHED_MIOU)
