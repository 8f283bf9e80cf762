"""Code both stages use: config schema, the feature store, label sets, provenance, errors."""
