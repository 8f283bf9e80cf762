"""Code both stages use: config schema, the feature store, label sets, provenance, errors."""

if __name__ != "cmarr.shared":  # shared/ is linked into cmarr/ (cmarr/shared -> ../shared) and has one import name
    raise ImportError(
        f"import cmarr.shared, not {__name__}: shared/ is the package cmarr.shared (a second name would load "
        "a second copy of every module and class)"
    )
