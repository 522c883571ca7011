"""The Wix social-publisher dialect: GenerateImage and GetGeneratedImage (shared/seeds/000_…)."""
