"""The model factory (torch side): split definitions, bottleneck / entropy / slimmable / prefilter
modules, training, evaluation and export to a model bundle.

Imports torch, torchvision and compressai; the device side (device_client/, shared/) never
imports this package.
"""
