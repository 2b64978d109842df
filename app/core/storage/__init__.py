"""The artifact store: content-addressed blobs, artifact records, safetensors header checks, temp files."""
