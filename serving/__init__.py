"""Local serving: the real Triton Inference Server from the nvidia-pytriton wheel, on a CPU."""
