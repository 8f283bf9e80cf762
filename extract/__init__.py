"""Extraction stage: corpus readers, media decoding, frozen encoders, the store writer loop."""
