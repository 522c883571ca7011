"""The Pictory AI Studio dialect: image jobs with per-model aspect ratios and credits (shared/seeds/003_…)."""
