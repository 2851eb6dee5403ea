"""Human-facing outputs of the analysis: plots (:mod:`sparcom.report.plots`), output directories
(:mod:`sparcom.report.outputs`) and the self-contained HTML report (:mod:`sparcom.report.html`)."""
