"""Training: teachers from scratch, students by HND / GHND / Entropic Student (+ slimmable),
the prefilter; one YAML config per experiment, step-based checkpoints that resume the same run."""
