"""Generated gRPC API of the musicrec gateway (see proto/ and scripts/gen_proto.py)."""
