"""deeplabv3plus on Pascal Context (59 classes): mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_pascal_context_59.py, one variant string each.

  python main.py --config=configs/deeplabv3plus_pascal_context_59.py:r101-d8_480x480_40k --workdir=work_dirs/deeplabv3plus_r101-d8_480x480_40k_pascal_context_59

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r101-d8_480x480_40k: 52.86).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3plus/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r101-d8_480x480_40k": 52.86,
    "r101-d8_480x480_80k": 53.20,
}


def get_config(variant: str = "r101-d8_480x480_40k"):
  return common.mmseg_config("deeplabv3plus", "pascal_context_59", variant, PUBLISHED_MIOU)
