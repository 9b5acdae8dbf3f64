"""Export formats and the default ONNX opset, shared by ``weights.export`` and the command line."""

FORMATS = ("onnx", "torchscript", "safetensors", "hub")
DEFAULT_OPSET = 18
