"""Cityscapes label ids <-> the 19 train ids (cityscapesscripts' ``labels.py`` table)."""

# labelId -> trainId for the 19 evaluated classes; every other labelId maps to 255 (ignore).
LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
TRAIN_ID_TO_LABEL_ID = {v: k for k, v in LABEL_ID_TO_TRAIN_ID.items()}
