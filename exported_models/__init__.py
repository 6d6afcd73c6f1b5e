"""Shipped detectors: NAME.onnx (model card in its metadata) and NAME.json (the card, with the file sha256)."""
