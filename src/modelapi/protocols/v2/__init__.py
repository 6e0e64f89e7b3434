"""Open Inference Protocol (KServe V2 / Triton HTTP), its binary tensor extension and repository extension."""
