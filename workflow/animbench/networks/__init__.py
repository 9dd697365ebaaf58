"""Standard networks in their published torchvision / timm / reference layouts.

torchvision's wheel cannot be imported beside the CPU torch used here (and timm needs it), so
the networks whose published weight files the benchmark loads are written here, one module per
family, with the published parameter names and shapes: those files load key for key. This
layer stands on the foundation (errors, checkpoint, device, files, weights) and torch only;
models, train and evaluate import from it.
"""
