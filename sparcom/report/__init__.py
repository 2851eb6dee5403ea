"""Human-facing outputs of the analysis: plots (:mod:`sparcom.report.plots`) and output directories
(:mod:`sparcom.report.outputs`)."""
