"""PSPNet on Cityscapes: mmseg's configs/pspnet/pspnet_<variant>_cityscapes.py by variant.

  python main.py --config=configs/pspnet_cityscapes.py:r50-d8_512x1024_40k --workdir=work_dirs/pspnet_r50-d8_512x1024_40k_cityscapes

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/mmseg_configs/pspnet/pspnet.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x1024_40k: mIoU 77.85.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return zoo.shim_config("pspnet", "cityscapes", variant)
