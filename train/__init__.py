"""Training stage: dataset over the store, the CM-ARR model and losses, protocol and reports."""

if __name__ != "cmarr.train":  # train/ is linked into cmarr/ (cmarr/train -> ../train) and has one import name
    raise ImportError(
        f"import cmarr.train, not {__name__}: train/ is the package cmarr.train (a second name would load "
        "a second copy of every module and class)"
    )
