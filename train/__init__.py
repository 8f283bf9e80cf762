"""Training stage: dataset over the store, the CM-ARR model and losses, protocol and reports."""
