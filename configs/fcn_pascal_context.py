"""fcn on Pascal Context (60 classes): mmseg's configs/fcn/fcn_<variant>_pascal_context.py, one variant string each.

  python main.py --config=configs/fcn_pascal_context.py:r101-d8_480x480_40k --workdir=work_dirs/fcn_r101-d8_480x480_40k_pascal_context

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r101-d8_480x480_40k: 44.43).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/fcn/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r101-d8_480x480_40k": 44.43,
    "r101-d8_480x480_80k": 44.13,
}


def get_config(variant: str = "r101-d8_480x480_40k"):
  return common.mmseg_config("fcn", "pascal_context", variant, PUBLISHED_MIOU)
