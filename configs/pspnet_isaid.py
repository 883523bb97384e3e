"""pspnet on iSAID: mmseg's configs/pspnet/pspnet_<variant>_isaid.py, one variant string each.

  python main.py --config=configs/pspnet_isaid.py:r18-d8_4x4_896x896_80k --workdir=work_dirs/pspnet_r18-d8_4x4_896x896_80k_isaid

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r18-d8_4x4_896x896_80k: 60.22).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r18-d8_4x4_896x896_80k": 60.22,
    "r50-d8_4x4_896x896_80k": 65.36,
}


def get_config(variant: str = "r18-d8_4x4_896x896_80k"):
  return common.mmseg_config("pspnet", "isaid", variant, PUBLISHED_MIOU)
