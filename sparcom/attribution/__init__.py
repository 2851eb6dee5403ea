"""Attribution: a first-order estimate of what deactivating each component does to the reference responses' NLL."""
