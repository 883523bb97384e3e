"""deeplabv3 on Pascal Context (60 classes): mmseg's configs/deeplabv3/deeplabv3_<variant>_pascal_context.py, one variant string each.

  python main.py --config=configs/deeplabv3_pascal_context.py:r101-d8_480x480_40k --workdir=work_dirs/deeplabv3_r101-d8_480x480_40k_pascal_context

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r101-d8_480x480_40k: 46.55).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r101-d8_480x480_40k": 46.55,
    "r101-d8_480x480_80k": 46.42,
}


def get_config(variant: str = "r101-d8_480x480_40k"):
  return common.mmseg_config("deeplabv3", "pascal_context", variant, PUBLISHED_MIOU)
