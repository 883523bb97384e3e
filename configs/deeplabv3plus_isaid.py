"""deeplabv3plus on iSAID: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_isaid.py, one variant string each.

  python main.py --config=configs/deeplabv3plus_isaid.py:r18-d8_4x4_896x896_80k --workdir=work_dirs/deeplabv3plus_r18-d8_4x4_896x896_80k_isaid

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r18-d8_4x4_896x896_80k: 61.35).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3plus/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r18-d8_4x4_896x896_80k": 61.35,
    "r50-d8_4x4_896x896_80k": 67.06,
}


def get_config(variant: str = "r18-d8_4x4_896x896_80k"):
  return common.mmseg_config("deeplabv3plus", "isaid", variant, PUBLISHED_MIOU)
