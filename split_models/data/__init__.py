"""Datasets for training and evaluation: a generated detection benchmark (COCO format) and readers
for any COCO-format dataset or a plain folder of frames (unlabeled, for HND/GHND)."""
