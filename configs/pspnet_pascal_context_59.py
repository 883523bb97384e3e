"""pspnet on Pascal Context (59 classes): mmseg's configs/pspnet/pspnet_<variant>_pascal_context_59.py, one variant string each.

  python main.py --config=configs/pspnet_pascal_context_59.py:r101-d8_480x480_40k --workdir=work_dirs/pspnet_r101-d8_480x480_40k_pascal_context_59

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r101-d8_480x480_40k: 52.02).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r101-d8_480x480_40k": 52.02,
    "r101-d8_480x480_80k": 52.47,
}


def get_config(variant: str = "r101-d8_480x480_40k"):
  return common.mmseg_config("pspnet", "pascal_context_59", variant, PUBLISHED_MIOU)
