"""The Placewise ML dialect: generate_image with integer task ids (shared/seeds/002_…)."""
