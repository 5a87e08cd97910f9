"""Code common to the device and the edge: wire stubs, feature codecs, errors, config models.

Never imports torch, torchvision or compressai: a Raspberry Pi installs this package with
onnxruntime and numpy only (a test guards it).
"""
