"""Evaluation: COCO mAP (pycocotools) and the rate–accuracy report of bundles against JPEG/WebP
full-frame offload, with bytes counted from the real bitstreams that cross the wire."""
