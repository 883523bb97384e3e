"""pspnet on ISPRS Vaihingen: mmseg's configs/pspnet/pspnet_<variant>_vaihingen.py, one variant string each.

  python main.py --config=configs/pspnet_vaihingen.py:r18-d8_4x4_512x512_80k --workdir=work_dirs/pspnet_r18-d8_4x4_512x512_80k_vaihingen

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r18-d8_4x4_512x512_80k: 71.46).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r18-d8_4x4_512x512_80k": 71.46,
    "r50-d8_4x4_512x512_80k": 72.36,
    "r101-d8_4x4_512x512_80k": 72.61,
}


def get_config(variant: str = "r18-d8_4x4_512x512_80k"):
  return common.mmseg_config("pspnet", "vaihingen", variant, PUBLISHED_MIOU)
