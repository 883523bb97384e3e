"""PSPNet on LoveDA: mmseg's configs/pspnet/pspnet_<variant>_loveda.py by variant.

  python main.py --config=configs/pspnet_loveda.py:r18-d8_512x512_80k --workdir=work_dirs/pspnet_r18-d8_512x512_80k_loveda

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/pspnet/pspnet.yml).
Data: README.md, "Datasets".
Expected result: r18-d8_512x512_80k: mIoU 48.62.
"""
from configs import zoo


def get_config(variant: str = "r18-d8_512x512_80k"):
  return zoo.shim_config("pspnet", "loveda", variant)
