"""HTTP front doors: one sub-package per dialect, all translating onto GenerationService."""
