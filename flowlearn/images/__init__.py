r"""Image utilities of the IRN tools, independent of any model.

* `io`: reading and writing images as `(3, H, W)` float tensors in [0, 1].
* `imresize`: MATLAB-compatible bicubic resizing, the reference of the paper's protocol.
* `metrics`: PSNR and SSIM on the Y channel, 8-bit quantisation, modcrop.
"""
