"""Generated Workload API stubs (run scripts/gen_proto.py; never edit)."""
