"""Extraction stage: corpus readers, media decoding, frozen encoders, the store writer loop."""

if __name__ != "cmarr.extract":  # extract/ is linked into cmarr/ (cmarr/extract -> ../extract) and has one import name
    raise ImportError(
        f"import cmarr.extract, not {__name__}: extract/ is the package cmarr.extract (a second name would load "
        "a second copy of every module and class)"
    )
