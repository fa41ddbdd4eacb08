"""The gRPC gateway: similar-user lookup, batched scoring through Triton, ranked artist names."""
