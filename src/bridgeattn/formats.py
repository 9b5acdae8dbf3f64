"""Export formats and the default ONNX opset: shared by ``bridgeattn.export`` and the command line (no torch)."""

FORMATS = ("onnx", "torchscript", "safetensors", "hub")
DEFAULT_OPSET = 18
