"""FP8 post-training quantization (modelopt static, torchao dynamic / weight-only); restoring on load
lives in `worldforge.models.quantized`."""
