"""Necks (mmseg ``models/necks``): modules between the backbone's feature tuple and the heads."""
