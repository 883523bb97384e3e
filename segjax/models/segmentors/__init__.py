"""Segmentors (mmseg ``models/segmentors``): EncoderDecoder, CascadeEncoderDecoder, and the test
modes (whole / slide) in ``inference``."""
