"""pspnet on Pascal Context (60 classes): mmseg's configs/pspnet/pspnet_<variant>_pascal_context.py, one variant string each.

  python main.py --config=configs/pspnet_pascal_context.py:r101-d8_480x480_40k --workdir=work_dirs/pspnet_r101-d8_480x480_40k_pascal_context

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r101-d8_480x480_40k: 46.60).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r101-d8_480x480_40k": 46.60,
    "r101-d8_480x480_80k": 46.03,
}


def get_config(variant: str = "r101-d8_480x480_40k"):
  return common.mmseg_config("pspnet", "pascal_context", variant, PUBLISHED_MIOU)
