"""Reference ops of the StyleGAN2 / EG3D generator in plain PyTorch (no compiled extensions)."""
from .bias_act import ACTIVATIONS, activation_gain, bias_act
from .conv2d_resample import conv2d_resample
from .modulated_conv2d import modulated_conv2d
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["ACTIVATIONS", "activation_gain", "bias_act", "conv2d_resample", "modulated_conv2d", "downsample2d",
           "filter2d", "setup_filter", "upfirdn2d", "upsample2d"]
