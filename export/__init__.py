"""Export a trained run to the ONNX models Triton serves (the model repository comes next)."""
