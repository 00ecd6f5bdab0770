"""Reference segmentation architectures (PyTorch and Keras) and the trainer behind `ens train`.

Importing `zoo`, `zoo.registry` or `zoo.training` loads neither torch nor keras; the framework
modules (`torch_unet`, `keras_unet`, `train_torch`, `train_keras`) do. The Keras modules default
`KERAS_BACKEND` to "torch" before importing keras; set it yourself before the first `import keras`
to use another backend.
"""
